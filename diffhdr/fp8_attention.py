"""FP8 self-attention for Hopper: cuDNN's fused fp8 flash attention, forward and backward, through the
cuDNN frontend's Python graph API (`pip install nvidia-cudnn-frontend`), as a torch op.

Attention is about half of DiffHDR's FLOPs (40 heads x 32,400 video tokens x 128 at 720p). On an
H100 this op takes 26.1 ms forward and 105.3 ms forward + backward against cuDNN bf16's 36.9 and
144.1 (bench/bench_attention_fp8.py). One call is lossy (e4m3 keeps 3 mantissa bits); a whole
forward of the 14B model moves 1.34% from float32 with it and 1.32% without, where naive bf16 is at
1.46% (bench/bench_accuracy.py, random weights). So inference uses it by default where it runs
(`--no-fp8_attention` turns it off); training only with `model.fp8_attention`. Only the
self-attention over the video uses it; cross-attention over the 512 text tokens is cheap and stays
bf16, CFA's three branches with it.

Scaling, one scale per tensor, e4m3 (largest finite value 448):
  Q, K, V, dO     current: each tensor's own amax maps to 448 (nothing to go stale). K is first
                  smoothed, its mean over the tokens subtracted (as SageAttention does): that shifts
                  each query's scores by a constant, which softmax ignores, and the rows of dS sum to
                  zero, so dK is unchanged too; only the range to quantise shrinks.
  P               fixed: P is in [0, 1] and is scaled by 448 inside the kernel
  O               448 / amax(V). Every row of O is a convex combination of rows of V, so |O| <= amax(V):
                  O cannot overflow and needs no history. (On Hopper cuDNN writes O only in fp8, so
                  its scale has to be known before the kernel runs.)
  dQ, dK, dV, dP  delayed (dP is cuDNN's name for the score gradient dS): fp8 outputs too, with no
                  useful bound, so their scales come from the amaxes earlier backwards returned: one
                  running maximum per kind and shape, shared by all layers, decaying by DECAY a call,
                  with a MARGIN of headroom. Each backward returns the true amaxes; where one outgrew
                  the margin (those values were clipped), that backward runs again with the scales it
                  needs. Checking costs one host sync per attention backward (~0.1 s of GPU work at
                  720p), so a timestep that moves the gradients' range never clips them.
The history lives in this process only: after a resume the first backward of a shape measures
again, so a resumed run matches an uninterrupted one to fp8 rounding, not bit for bit.
Quantising Q, K and V happens outside the ops, in traceable code, so that inside a compiled block
inductor fuses it with the q/k norm and the rotary embedding; the ops take the e4m3 tensors. The
backward keeps them with O (fp8) and the softmax statistics.

On CPU the same ops run an emulation (the same quantisation, attention in float32), which is what
CI tests the autograd, checkpoint and compile plumbing with; the cuDNN kernels need the GPU
(bench/bench_attention_fp8.py checks them against float32 SDPA).
"""

from __future__ import annotations

import functools

import torch
from torch.utils._python_dispatch import _get_current_dispatch_mode

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
MARGIN = 2.0  # dQ/dK/dV/dP may grow 2x over the running maximum before a backward has to rerun
DECAY = 0.99  # per backward call: the running maximum forgets a spike within a few hundred calls

# Running amax of (dQ, dK, dV, dP) per (shape, device): one float32 (4,) tensor on the device.
_GRAD_AMAX: dict[tuple, torch.Tensor] = {}


def available(device, head_dim: int) -> bool:
    """cuDNN fp8 attention: a Hopper (or newer) GPU, the cuDNN frontend installed, and heads of 128
    (the only size Hopper's fp8 kernels take; Wan-14B's)."""
    device = torch.device(device)
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (9, 0) or head_dim != 128:
        return False
    try:
        import cudnn  # noqa: F401
    except ImportError:
        return False
    return True


def _quantize(x: torch.Tensor, amax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x -> (e4m3 values, descale (1, 1, 1, 1) float32) with amax mapped to FP8_MAX; saturating."""
    scale = FP8_MAX / amax.float().clamp(min=1e-12)
    x8 = (x.float() * scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return x8, (1.0 / scale).reshape(1, 1, 1, 1)


def _quantize_current(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _quantize(x, x.abs().amax())


def _quantize_qkv(q, k, v) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    k = k.float() - k.float().mean(dim=1, keepdim=True)  # (B, S, H, D): the mean over the tokens
    quantised = [_quantize_current(x) for x in (q, k, v)]
    return [x8 for x8, _ in quantised], [d for _, d in quantised]


@functools.cache
def _compiled(fn):
    return torch.compile(fn, dynamic=False, fullgraph=True)


def _fused(fn, *args):
    """fn compiled on the GPU, where eager quantisation would take ten passes over each 0.33 GB
    tensor (8 ms per attention call at 720p, measured) for inductor's two; plain on the CPU, where
    torch.compile is already tracing (the compiled block fuses it with what comes before) and under
    a dispatch mode (selective checkpointing records the ops one by one)."""
    plain = not args[0].is_cuda or torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None
    return (fn if plain else _compiled(fn))(*args)


def _dequantize(x8: torch.Tensor, descale: torch.Tensor, dtype) -> torch.Tensor:
    return (x8.float() * descale.reshape(())).to(dtype)


def _bhsd(x: torch.Tensor) -> torch.Tensor:
    """(B, S, H, D) storage seen as the (B, H, S, D) cuDNN expects, without a copy."""
    return x.transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# cuDNN graphs, built once per shape and device


@functools.cache
def _handle(device_index: int):
    import cudnn

    with torch.cuda.device(device_index):
        return cudnn.create_handle()


def _graph_tensors(g, names_like: dict, fp8_type, scalars: tuple[str, ...]):
    import cudnn

    t = {name: g.tensor(name=name, dim=list(x.shape), stride=list(x.stride()),
                        data_type=fp8_type if x.dtype == FP8 else cudnn.data_type.FLOAT)
         for name, x in names_like.items()}
    for name in scalars:
        t[name] = g.tensor(name=name, dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=cudnn.data_type.FLOAT)
    return t


def _set_outputs(outputs: dict, like: dict, fp8_type) -> None:
    import cudnn

    for name, node in outputs.items():
        x = like[name]
        node.set_output(True).set_dim(list(x.shape)).set_stride(list(x.stride())).set_data_type(
            fp8_type if x.dtype == FP8 else cudnn.data_type.FLOAT)


def _finish(g):
    import cudnn

    g.validate()
    g.build_operation_graph()
    g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    g.check_support()
    g.build_plans()
    return g


_FWD_SCALARS = ("descale_q", "descale_k", "descale_v", "descale_s", "scale_s", "scale_o")
_BWD_SCALARS = ("descale_q", "descale_k", "descale_v", "descale_o", "descale_dO", "descale_s", "descale_dP",
                "scale_s", "scale_dQ", "scale_dK", "scale_dV", "scale_dP")


@functools.cache
def _forward_graph(key, training: bool):
    """key: (shape, stride, device index) of Q, K, V, O in (B, H, S, D) view."""
    import cudnn

    shape, stride, index = key
    like = {n: torch.empty_strided(shape, stride, dtype=FP8, device="meta") for n in ("q", "k", "v", "o")}
    like |= {"stats": torch.empty(shape[0], shape[1], shape[2], 1, device="meta"),
             "amax_s": torch.empty(1, 1, 1, 1, device="meta"), "amax_o": torch.empty(1, 1, 1, 1, device="meta")}
    g = cudnn.pygraph(io_data_type=cudnn.data_type.BFLOAT16, intermediate_data_type=cudnn.data_type.FLOAT,
                      compute_data_type=cudnn.data_type.FLOAT, handle=_handle(index))
    t = _graph_tensors(g, {n: like[n] for n in ("q", "k", "v")}, cudnn.data_type.FP8_E4M3, _FWD_SCALARS)
    o, stats, amax_s, amax_o = g.sdpa_fp8(
        q=t["q"], k=t["k"], v=t["v"], descale_q=t["descale_q"], descale_k=t["descale_k"],
        descale_v=t["descale_v"], descale_s=t["descale_s"], scale_s=t["scale_s"], scale_o=t["scale_o"],
        generate_stats=training, attn_scale=shape[-1] ** -0.5, use_causal_mask=False, name="sdpa_fp8")
    outs = {"o": o, "amax_s": amax_s, "amax_o": amax_o} | ({"stats": stats} if training else {})
    _set_outputs(outs, like, cudnn.data_type.FP8_E4M3)
    return _finish(g), t | outs


@functools.cache
def _backward_graph(key):
    import cudnn

    shape, stride, index = key
    like = {n: torch.empty_strided(shape, stride, dtype=FP8, device="meta")
            for n in ("q", "k", "v", "o", "dO", "dQ", "dK", "dV")}
    like["stats"] = torch.empty(shape[0], shape[1], shape[2], 1, device="meta")
    like |= {n: torch.empty(1, 1, 1, 1, device="meta") for n in ("amax_dQ", "amax_dK", "amax_dV", "amax_dP")}
    g = cudnn.pygraph(io_data_type=cudnn.data_type.FP8_E4M3, intermediate_data_type=cudnn.data_type.FLOAT,
                      compute_data_type=cudnn.data_type.FLOAT, handle=_handle(index))
    t = _graph_tensors(g, {n: like[n] for n in ("q", "k", "v", "o", "dO", "stats")}, cudnn.data_type.FP8_E4M3,
                       _BWD_SCALARS)
    outs = dict(zip(("dQ", "dK", "dV", "amax_dQ", "amax_dK", "amax_dV", "amax_dP"), g.sdpa_fp8_backward(
        q=t["q"], k=t["k"], v=t["v"], o=t["o"], dO=t["dO"], stats=t["stats"],
        **{n: t[n] for n in _BWD_SCALARS}, attn_scale=shape[-1] ** -0.5, use_causal_mask=False,
        name="sdpa_fp8_backward")))
    _set_outputs(outs, like, cudnn.data_type.FP8_E4M3)
    return _finish(g), t | outs


def _run(graph_and_tensors, values: dict, device: torch.device) -> None:
    import cudnn

    graph, nodes = graph_and_tensors
    handle = _handle(device.index)
    cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream(device).cuda_stream)
    workspace = torch.empty(graph.get_workspace_size(), device=device, dtype=torch.uint8)
    graph.execute({nodes[n]: x for n, x in values.items()}, workspace, handle=handle)


def _key(x: torch.Tensor):
    v = _bhsd(x)
    return tuple(v.shape), tuple(v.stride()), x.device.index


def _scalar(x: float, device) -> torch.Tensor:
    return torch.full((1, 1, 1, 1), x, device=device, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# forward and backward on the GPU (cuDNN) and the CPU (emulation)


def _forward_cudnn(q8, k8, v8, descales, descale_o, training):
    dev = q8.device
    o8 = torch.empty_like(q8)
    B, S, H, _ = q8.shape
    stats = torch.empty(B, H, S, 1, device=dev, dtype=torch.float32)
    values = {"q": _bhsd(q8), "k": _bhsd(k8), "v": _bhsd(v8), "o": _bhsd(o8),
              "descale_q": descales[0], "descale_k": descales[1], "descale_v": descales[2],
              "descale_s": _scalar(1 / FP8_MAX, dev), "scale_s": _scalar(FP8_MAX, dev), "scale_o": 1.0 / descale_o,
              "amax_s": _scalar(0.0, dev), "amax_o": _scalar(0.0, dev)}
    if training:
        values["stats"] = stats
    _run(_forward_graph(_key(q8), training), values, dev)
    return o8, stats


def _fake_quant(x: torch.Tensor, scale) -> torch.Tensor:
    return (x * scale).clamp(-FP8_MAX, FP8_MAX).to(FP8).float() / scale


def _emulated_scores(qf, kf):
    return torch.einsum("bqhd,bkhd->bhqk", qf, kf) * qf.shape[-1] ** -0.5


def _forward_emulated(q8, k8, v8, descales, descale_o, training):
    qf, kf, vf = (x8.float() * d.reshape(()) for x8, d in zip((q8, k8, v8), descales))
    s = _emulated_scores(qf, kf)
    stats = torch.logsumexp(s, dim=-1, keepdim=True)
    p = _fake_quant(torch.exp(s - stats), FP8_MAX)
    o = torch.einsum("bhqk,bkhd->bqhd", p, vf).contiguous()  # the layout cuDNN writes (and the fake op)
    return _quantize(o, descale_o.reshape(()) * FP8_MAX)[0], stats


def _backward_cudnn(q8, k8, v8, o8, do8, stats, descales, scales):
    dev = q8.device
    grads = [torch.empty_like(q8), torch.empty_like(k8), torch.empty_like(v8)]
    amax = [_scalar(0.0, dev) for _ in range(4)]
    values = {"q": _bhsd(q8), "k": _bhsd(k8), "v": _bhsd(v8), "o": _bhsd(o8), "dO": _bhsd(do8), "stats": stats,
              "dQ": _bhsd(grads[0]), "dK": _bhsd(grads[1]), "dV": _bhsd(grads[2]),
              "amax_dQ": amax[0], "amax_dK": amax[1], "amax_dV": amax[2], "amax_dP": amax[3],
              "descale_s": _scalar(1 / FP8_MAX, dev), "scale_s": _scalar(FP8_MAX, dev),
              "descale_dP": 1.0 / scales[3], "scale_dQ": scales[0], "scale_dK": scales[1], "scale_dV": scales[2],
              "scale_dP": scales[3]} | dict(zip(("descale_q", "descale_k", "descale_v", "descale_o", "descale_dO"),
                                                 descales))
    _run(_backward_graph(_key(q8)), values, dev)
    return grads, torch.cat([a.reshape(1) for a in amax])


def _backward_emulated(q8, k8, v8, o8, do8, stats, descales, scales):
    qf, kf, vf, of, dof = (x8.float() * d.reshape(()) for x8, d in zip((q8, k8, v8, o8, do8), descales))
    p = torch.exp(_emulated_scores(qf, kf) - stats)
    dv = torch.einsum("bhqk,bqhd->bkhd", _fake_quant(p, FP8_MAX), dof)
    dp = torch.einsum("bqhd,bkhd->bhqk", dof, vf)
    delta = (dof * of).sum(-1).transpose(1, 2).unsqueeze(-1)  # (B, H, S, 1)
    ds = p * (dp - delta) * qf.shape[-1] ** -0.5  # what cuDNN calls dP: the score gradient
    ds8 = _fake_quant(ds, scales[3].reshape(()))
    dq = torch.einsum("bhqk,bkhd->bqhd", ds8, kf)
    dk = torch.einsum("bhqk,bqhd->bkhd", ds8, qf)
    amax = torch.stack([dq.abs().amax(), dk.abs().amax(), dv.abs().amax(), ds.abs().amax()])
    grads = [_quantize(g.contiguous(), FP8_MAX / s.reshape(()))[0] for g, s in zip((dq, dk, dv), scales)]
    return grads, amax


# ---------------------------------------------------------------------------------------------
# the ops


@torch.library.custom_op("diffhdr::fp8_sdpa_fwd", mutates_args=())
def fp8_sdpa_fwd(q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, descale_q: torch.Tensor,
                 descale_k: torch.Tensor, descale_v: torch.Tensor, training: bool
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, H, D) e4m3 Q, K, V and their descales (1, 1, 1, 1) -> O in e4m3 (B, S, H, D), whose
    descale is V's (|O| <= amax(V)), and the softmax statistics (B, H, S, 1) (empty unless `training`)."""
    forward = _forward_cudnn if q8.is_cuda else _forward_emulated
    return forward(q8, k8, v8, [descale_q, descale_k, descale_v], descale_v, training)


@fp8_sdpa_fwd.register_fake
def _(q8, k8, v8, descale_q, descale_k, descale_v, training):
    B, S, H, _ = q8.shape
    return torch.empty_like(q8), q8.new_empty(B, H, S, 1, dtype=torch.float32)


@torch.library.custom_op("diffhdr::fp8_sdpa_bwd", mutates_args=())
def fp8_sdpa_bwd(q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, o8: torch.Tensor, stats: torch.Tensor,
                 descale_q: torch.Tensor, descale_k: torch.Tensor, descale_v: torch.Tensor, grad_o: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dQ, dK, dV (in grad_o's dtype) of fp8_sdpa_fwd's output, given its upstream gradient."""
    do8, descale_do = _fused(_quantize_current, grad_o)
    descales = [descale_q, descale_k, descale_v, descale_v, descale_do]  # O's descale is V's
    backward = _backward_cudnn if q8.is_cuda else _backward_emulated
    key = (tuple(q8.shape), str(q8.device))
    if key not in _GRAD_AMAX:
        _GRAD_AMAX[key] = torch.ones(4, device=q8.device)
    running = _GRAD_AMAX[key]
    # Overflow is seen in the amaxes the kernel returns; an overflowing dP (dS) also hides dQ's and
    # dK's true amax (they are computed from the clipped dS), so the worst case is three runs.
    for _ in range(3):
        scales = list((FP8_MAX / (MARGIN * running)).reshape(4, 1, 1, 1, 1))
        grads, amax = backward(q8, k8, v8, o8, do8, stats, descales, scales)
        overflow = bool((amax > MARGIN * running).any())  # a host sync, once per attention backward
        running.copy_(amax if overflow else torch.maximum(amax, running * DECAY))
        if not overflow:
            break
    return tuple(_fused(_dequantize, g8, 1.0 / s, grad_o.dtype) for g8, s in zip(grads, scales))


@fp8_sdpa_bwd.register_fake
def _(q8, k8, v8, o8, stats, descale_q, descale_k, descale_v, grad_o):
    return tuple(torch.empty_like(x, dtype=grad_o.dtype) for x in (q8, k8, v8))


class _FP8Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        (q8, k8, v8), descales = _fused(_quantize_qkv, q, k, v)
        o8, stats = fp8_sdpa_fwd(q8, k8, v8, *descales, True)
        ctx.save_for_backward(q8, k8, v8, o8, stats, *descales)
        return _fused(_dequantize, o8, descales[2], q.dtype)

    @staticmethod
    def backward(ctx, grad_o):
        return fp8_sdpa_bwd(*ctx.saved_tensors, grad_o.contiguous())


def fp8_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(D)) V for (B, S, H, D) tensors, in fp8; differentiable."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        return _FP8Attention.apply(q, k, v)
    (q8, k8, v8), descales = _fused(_quantize_qkv, q, k, v)
    o8, _ = fp8_sdpa_fwd(q8, k8, v8, *descales, False)
    return _fused(_dequantize, o8, descales[2], q.dtype)


# ---------------------------------------------------------------------------------------------
# the processor


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding on interleaved pairs (as diffusers' WanAttnProcessor applies it)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2], sin[..., 1::2]
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1).flatten(-2).type_as(x)


class FP8SelfAttnProcessor:
    """diffusers' WanAttnProcessor for self-attention (no image branch), with `attend` for the
    attention itself: fp8_attention by default."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self, attend=fp8_attention):
        self.attend = attend

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        k = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (attn.heads, -1))
        v = attn.to_v(hidden_states).unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            q, k = _rotate(q, *rotary_emb), _rotate(k, *rotary_emb)
        out = self.attend(q, k, v).flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))


def use_fp8_attention(transformer, prefixes=("blocks.", "vace_blocks.")) -> int:
    """fp8 self-attention in the main (and VACE) blocks; returns how many layers."""
    layers = [m for name, m in transformer.named_modules() if name.startswith(prefixes) and name.endswith(".attn1")]
    for attn in layers:
        attn.set_processor(FP8SelfAttnProcessor())
    return len(layers)
