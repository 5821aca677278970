"""How the model runs on a GPU: speed modes (attention kernel, fp8 GEMMs, torch.compile) and
memory modes (fp8 weight storage, group offloading, VAE tiling). The lossy steps are measured in
bench/bench_infer.py and bench/bench_accuracy.py.

speed   naive    diffusers as installed, the LoRA unmerged (the baseline the benchmarks compare against)
        default  the LoRA folded into the weights (inference.py, before the memory mode), cuDNN
                 attention, the FFN's GELU in its GEMM's epilogue, torch.compile of the repeated
                 blocks (about 30 s of warm-up) and, where it runs (Hopper, nvidia-cudnn-frontend,
                 heads of 128), fp8 self-attention (diffhdr.fp8_attention): 1.54x naive on an H100,
                 a forward 1.3-1.4% from float32's where naive bf16 is 1.5% (random weights,
                 LoRA of rank 32). `--no-fp8_attention` keeps attention in bf16: 1.32x.
        fast     default + fp8 (e4m3, row-wise scaled) GEMMs for the DiT's linears
memory  full     everything resident (about 38 GB for the 14B model at 720p)
        low      fp8 weights for the block linears, quantised layer by layer on the GPU, and fp8
                 GEMMs (Ada/Hopper; 21.7 GiB peak measured on an H100), else fp8 weight storage
                 cast to bf16 per layer (22.8 GiB); tiled VAE. For 24 GB cards.
        offload  block-level group offloading to CPU with CUDA streams: least memory, slowest
        auto     by free GPU memory
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import fp8_attention
from .model import compile_blocks
from .options import MEMORY_MODES, SPEED_MODES

log = logging.getLogger(__name__)

FP8_MAX = fp8_attention.FP8_MAX  # largest finite float8_e4m3fn


def _quantize_rows(x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) -> e4m3 values and one float32 scale per row (M, 1), the largest |x| mapped to 448."""
    s = x2.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    return (x2 / s).to(torch.float8_e4m3fn), s


class Float8Linear(nn.Module):
    """Inference-only nn.Linear with an e4m3 weight (one scale per output row) and activations
    quantised per token at run time; the product runs on the fp8 tensor cores via torch._scaled_mm."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w_q, scale = _quantize_rows(linear.weight.detach().float())  # scale (N, 1)
        self.register_buffer("weight_fp8", w_q)
        self.register_buffer("weight_scale", scale.t().contiguous())  # (1, N)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype if x.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        xq, xs = _quantize_rows(x.reshape(-1, shape[-1]))
        out = torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=xs, scale_b=self.weight_scale, out_dtype=dtype)
        if self.bias is not None:
            out = out + self.bias.to(dtype)
        return out.reshape(*shape[:-1], self.out_features)


class _Float8MatMul(torch.autograd.Function):
    """y = x W^T with e4m3 operands for a frozen W; backward gives dx (dW is never needed)."""

    @staticmethod
    def forward(ctx, x2, w_row, s_row, w_colT, s_col, out_dtype):
        ctx.save_for_backward(w_colT, s_col)
        ctx.out_dtype = out_dtype
        xq, xs = _quantize_rows(x2)
        return torch._scaled_mm(xq, w_row.t(), scale_a=xs, scale_b=s_row, out_dtype=out_dtype)

    @staticmethod
    def backward(ctx, dy):
        w_colT, s_col = ctx.saved_tensors
        dq, ds = _quantize_rows(dy.contiguous())
        dx = torch._scaled_mm(dq, w_colT.t(), scale_a=ds, scale_b=s_col, out_dtype=ctx.out_dtype)
        return dx, None, None, None, None, None


class Float8TrainLinear(nn.Module):
    """A frozen nn.Linear for training: fp8 in forward and in the input-gradient GEMM.
    Keeps W/row-scale (N, K) for x W^T and W/column-scale, transposed (K, N), for dy W;
    together as large as the bf16 weight they replace."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()
        w_row, s_row = _quantize_rows(w)  # for x W^T: one scale per output row, s_row (N, 1)
        w_colT, s_col = _quantize_rows(w.t().contiguous())  # for dy W: one per input column, (K, 1)
        self.register_buffer("w_row", w_row)
        self.register_buffer("s_row", s_row.t().contiguous())  # (1, N)
        self.register_buffer("w_colT", w_colT)  # (K, N)
        self.register_buffer("s_col", s_col.t().contiguous())  # (1, K)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    @property
    def weight(self):  # peft reads base_layer.weight for its dtype and shape
        return self.w_row

    def forward(self, x):
        dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
        x2 = x.reshape(-1, x.shape[-1]).to(dtype)
        y = _Float8MatMul.apply(x2, self.w_row, self.s_row, self.w_colT, self.s_col, dtype)
        if self.bias is not None:
            y = y + self.bias.to(dtype)
        return y.reshape(*x.shape[:-1], self.out_features)


def _swap_children(root: nn.Module, pick, make) -> int:
    """Replace every submodule for which pick(its full name, it) holds by make(it); returns how many."""
    swapped = 0
    for name, module in list(root.named_modules()):
        for child_name, child in list(module.named_children()):
            if pick(f"{name}.{child_name}" if name else child_name, child):
                setattr(module, child_name, make(child))
                swapped += 1
    return swapped


def _fp8_shaped(child: nn.Module) -> bool:
    """A plain nn.Linear whose sizes the fp8 GEMMs take (multiples of 16)."""
    return type(child) is nn.Linear and child.in_features % 16 == 0 and child.out_features % 16 == 0


def use_fp8_training_linears(transformer: nn.Module, prefix: str = "blocks.") -> int:
    """Swap the frozen base linears of the main blocks (inside LoRA wrappers too) for Float8TrainLinear."""
    return _swap_children(transformer, lambda name, child: name.startswith(prefix) and _fp8_shaped(child)
                          and not child.weight.requires_grad, Float8TrainLinear)


def use_fp8_linears(transformer: nn.Module, prefixes=("blocks.", "vace_blocks."), device=None) -> int:
    """Swap the block linears (LoRA merged first) for Float8Linear. With `device`, each layer is
    moved there and quantised one at a time, so the bf16 model never has to fit. Returns how many."""
    if getattr(transformer, "peft_config", None):
        merge_lora(transformer)
    return _swap_children(transformer, lambda name, child: name.startswith(prefixes) and _fp8_shaped(child),
                          lambda child: Float8Linear(child.to(device) if device is not None else child))


def fp8_capable(device) -> bool:
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def merge_lora(transformer: nn.Module) -> int:
    """Fold the LoRA into the base weights (W <- W + s B A, as the authors' release loads it) and put
    the plain layers back in place of peft's wrappers. Unmerged, every wrapped linear of the 40 main
    blocks reads its input again and adds a full-size product: about 0.5 s of a 720p CFG step on an
    H100. Returns how many layers were folded."""
    from peft.tuners.lora import LoraLayer

    def fold(layer):
        layer.merge()
        return layer.get_base_layer()

    return _swap_children(transformer, lambda name, child: isinstance(child, LoraLayer), fold)


class GELUProjection(nn.Module):
    """diffusers' GELU block with the tanh approximation (a linear, then GELU: the FFN's first half)
    as one cuBLASLt GEMM whose epilogue adds the bias and applies GELU, so the 13,824-wide
    activation is written once instead of written, read and written again. The epilogue works on
    the float32 accumulator, before bf16 rounding. Keeps `proj`, so the weights' names stay."""

    def __init__(self, gelu: nn.Module):
        super().__init__()
        self.proj = gelu.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # On the CPU torch's _addmm_activation applies the exact (erf) GELU; fp8 linears (swapped in
        # later) have no epilogue: both take the unfused path.
        if not x.is_cuda or type(self.proj) is not nn.Linear:
            return F.gelu(self.proj(x), approximate="tanh")
        y = torch._addmm_activation(self.proj.bias, x.reshape(-1, x.shape[-1]), self.proj.weight.t(), use_gelu=True)
        return y.reshape(*x.shape[:-1], y.shape[-1])


def use_gelu_epilogue(transformer: nn.Module) -> int:
    """Swap each FFN's GELU(approximate="tanh") block whose projection is a plain biased nn.Linear
    (not fp8, LoRA merged) for GELUProjection; returns how many."""
    from diffusers.models.activations import GELU

    return _swap_children(transformer, lambda name, child: type(child) is GELU and child.approximate == "tanh"
                          and type(child.proj) is nn.Linear and child.proj.bias is not None, GELUProjection)


def apply_speed_mode(model, mode: str, device, memory: str = "full", fp8_attn: bool | None = None) -> bool:
    """Call after apply_memory_mode. Under `offload` the blocks are wrapped by hooks: no fp8 swap
    (it needs resident weights) and no torch.compile. `fp8_attn` puts the self-attention on fp8
    (diffhdr.fp8_attention); None: wherever it can run. Returns whether it did."""
    if mode not in SPEED_MODES:
        raise ValueError(f"speed mode must be one of {SPEED_MODES}")
    if mode == "naive" or torch.device(device).type != "cuda":
        return False
    model.transformer.set_attention_backend("_native_cudnn")
    hooked = memory == "offload" or (memory == "low" and not fp8_capable(device))
    if not hooked:
        if mode == "fast":
            log.info("fp8 GEMMs in %d linears", use_fp8_linears(model.transformer))
        if n := use_gelu_epilogue(model.transformer):  # none under fp8 GEMMs, which have no epilogue
            log.info("GELU in the GEMM epilogue of %d FFNs", n)
    # fp8 attention computes whole sequences: not under context parallelism, whose shards it would miss
    sharded = getattr(model.transformer, "_parallel_config", None) is not None
    runs = not sharded and fp8_attention.available(device, model.transformer.config.attention_head_dim)
    use = runs and fp8_attn is not False
    if use:
        log.info("fp8 attention in %d self-attention layers", fp8_attention.use_fp8_attention(model.transformer))
    elif fp8_attn is not False:  # wanted, cannot run: a warning only where it was asked for
        log.log(logging.WARNING if fp8_attn else logging.INFO,
                "fp8 attention needs a Hopper GPU, nvidia-cudnn-frontend (pip install -e .[fp8]), heads of 128 "
                "and no context parallelism: attention stays bf16")
    if not hooked:
        compile_blocks(model.transformer)
    return use


def pick_memory_mode(device) -> str:
    free = torch.cuda.mem_get_info(torch.device(device))[0] / 2**30
    mode = "full" if free >= 45 else "low" if free >= 23 else "offload"  # peaks: 37.5 and 21.7 GiB
    log.info("%.1f GiB free on %s: memory mode %s", free, device, mode)
    return mode


def apply_memory_mode(model, mode: str, device) -> str:
    """Place the transformer and VAE on `device` as `mode` says; returns the mode used."""
    if mode not in MEMORY_MODES:
        raise ValueError(f"memory mode must be one of {MEMORY_MODES}")
    device = torch.device(device)
    if device.type != "cuda":
        mode = "full"
    elif mode == "auto":
        mode = pick_memory_mode(device)
    if mode == "full":
        model.transformer.to(device)
        # Untiled, the fp32 VAE peaks at 31 GiB (context encode) and 21 GiB (decode) at 33x720p;
        # tiled at 3.9 and 2.8 (bench/results/vae_*.json). Only an 80 GB card affords both.
        if device.type == "cuda" and torch.cuda.get_device_properties(device).total_memory < 75 * 2**30:
            model.vae.enable_tiling()
    elif mode == "low":
        if fp8_capable(device):
            log.info("fp8 weights and GEMMs in %d linears", use_fp8_linears(model.transformer, device=device))
        else:  # storage only: weights cast to bf16 layer by layer at run time
            model.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn,
                                                       compute_dtype=torch.bfloat16)
        model.transformer.to(device)
        model.vae.enable_tiling()
    else:
        model.transformer.enable_group_offload(
            onload_device=device, offload_type="block_level", num_blocks_per_group=1, use_stream=True
        )
        model.vae.enable_tiling()
    model.vae.to(device)
    return mode
