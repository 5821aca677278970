import torch
from torch.utils.checkpoint import CheckpointPolicy

import diffhdr.model as model_mod
from diffhdr.config import ModelConfig
from diffhdr.fp8_attention import use_fp8_attention
from diffhdr.model import DiffHDRModel, compile_blocks, enable_gradient_checkpointing
from diffhdr.tiny import resolve_backbone

POLICY = model_mod._save_self_attention_policy


def forward_backward(save_attention, monkeypatch, fp8=False, compile=False):
    """Forward + backward of the tiny model; which attention results did the policy keep?"""
    monkeypatch.setattr(model_mod, "SELF_ATTENTION_MIN_KEYS", 16)  # tiny: 128 video tokens, 8 text
    kept = []

    def counting(ctx, op, *args, **kwargs):
        decision = POLICY(ctx, op, *args, **kwargs)
        if decision == CheckpointPolicy.MUST_SAVE and not ctx.is_recompute:
            kept.append(args[1].shape[-2] if op in model_mod._SDPA_OPS else op)
        return decision

    monkeypatch.setattr(model_mod, "_save_self_attention_policy", counting)
    m = DiffHDRModel.from_pretrained(resolve_backbone("tiny"), dtype=torch.float32)
    torch.manual_seed(0)  # the same LoRA initialisation every call
    m.add_lora(ModelConfig(lora_rank=4, lora_alpha=4.0))
    enable_gradient_checkpointing(m.transformer, save_attention=save_attention)
    if fp8:
        use_fp8_attention(m.transformer)
    if compile:
        compile_blocks(m.transformer)
    m.transformer.train()
    g = torch.Generator().manual_seed(0)
    out = m.transformer(hidden_states=torch.randn(1, 16, 2, 16, 16, generator=g), timestep=torch.tensor([300.0]),
                        encoder_hidden_states=torch.randn(1, 8, 32, generator=g),
                        control_hidden_states=torch.randn(1, 96, 2, 16, 16, generator=g), return_dict=False)[0]
    out.pow(2).mean().backward()
    return kept, torch.cat([p.grad.flatten() for p in m.transformer.parameters() if p.requires_grad])


def test_selective_checkpointing_keeps_self_attention_only(monkeypatch):
    kept_none, g_none = forward_backward(0, monkeypatch)
    kept_all, g_all = forward_backward(-1, monkeypatch)
    kept_two, g_two = forward_backward(2, monkeypatch)
    assert kept_none == [] and kept_all == [128] * 4 and kept_two == [128] * 2  # 4 main blocks, video keys
    assert torch.allclose(g_none, g_all, atol=1e-7) and torch.allclose(g_none, g_two, atol=1e-7)


def test_selective_checkpointing_keeps_fp8_attention(monkeypatch):
    """fp8 self-attention (the CPU emulation of the cuDNN op): its outputs are kept in every block,
    so backward never re-runs it, and the LoRA gradients stay close to exact attention's."""
    kept, g_fp8 = forward_backward(-1, monkeypatch, fp8=True)
    _, g_exact = forward_backward(-1, monkeypatch)
    assert kept == [torch.ops.diffhdr.fp8_sdpa_fwd.default] * 4
    assert torch.isfinite(g_fp8).all()
    assert torch.nn.functional.cosine_similarity(g_fp8, g_exact, dim=0) > 0.98  # 0.989 measured


def test_fp8_attention_compiles(monkeypatch):
    """Under torch.compile (as training runs it) the fp8 op is opaque to the compiler, which relies on
    its fake kernel for shapes and strides: a mismatch with the real outputs fails here."""
    _, g_eager = forward_backward(-1, monkeypatch, fp8=True)
    _, g_compiled = forward_backward(-1, monkeypatch, fp8=True, compile=True)
    assert torch.nn.functional.cosine_similarity(g_compiled, g_eager, dim=0) > 0.999


def test_lora_inputs_without_peft_cast_give_identical_training_step():
    """bf16 base, float32 LoRA, bf16 autocast (train.py's setup): skipping peft's cast of each
    LoRA input to float32 changes neither the loss nor any LoRA gradient."""
    model = DiffHDRModel.from_pretrained(resolve_backbone("tiny"), dtype=torch.bfloat16)
    model.add_lora(ModelConfig(lora_rank=4, lora_alpha=4.0))
    g = torch.Generator().manual_seed(0)
    for p in model.transformer.parameters():
        if p.requires_grad:
            p.data = torch.randn(p.shape, generator=g) * 0.05  # float32, B non-zero so A gets gradient
    x, ctx = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 96, 2, 4, 4, generator=g)
    text = torch.randn(1, 8, 32, generator=g)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model._dit_forward(x, torch.tensor([500.0]), text, ctx)
        loss = out.float().square().mean()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.transformer.named_parameters() if p.requires_grad}
        model.transformer.zero_grad(set_to_none=True)
        return loss.detach(), grads

    loss_cast, grads_cast = step()
    model_mod.lora_inputs_stay_in_compute_dtype(model.transformer)
    loss, grads = step()
    assert torch.equal(loss, loss_cast)
    assert grads.keys() == grads_cast.keys() and all(torch.equal(grads[n], grads_cast[n]) for n in grads)
