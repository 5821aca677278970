"""diffhdr.fp8_attention on CPU, where the op runs its emulation of cuDNN's fp8 kernels (the same
quantisation and delayed scaling); the kernels themselves are checked on a GPU by
bench/bench_attention_fp8.py."""

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_wan import WanAttention, WanAttnProcessor

from diffhdr import fp8_attention
from diffhdr.fp8_attention import FP8SelfAttnProcessor, fp8_attention as attend


def exact(q, k, v):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def qkv(s=256, h=2, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, s, h, d, generator=g).requires_grad_() for _ in range(3)]


def test_processor_is_wans_with_the_attention_swapped():
    torch.manual_seed(0)
    attn = WanAttention(dim=64, heads=4, dim_head=16, eps=1e-6, cross_attention_dim_head=None)
    x = torch.randn(1, 24, 64)
    freqs = torch.randn(1, 24, 1, 16), torch.randn(1, 24, 1, 16)
    attn.set_processor(WanAttnProcessor())
    ref = attn(x, rotary_emb=freqs)
    attn.set_processor(FP8SelfAttnProcessor(attend=exact))
    assert torch.allclose(attn(x, rotary_emb=freqs), ref, atol=1e-6)
    attn.set_processor(FP8SelfAttnProcessor())
    assert rel(attn(x, rotary_emb=freqs), ref) < 0.1


def test_forward_and_backward_close_to_exact_attention():
    q, k, v = qkv()
    grad = torch.randn(1, 256, 2, 64, generator=torch.Generator().manual_seed(1))
    ref = exact(q, k, v)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    out = attend(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    assert rel(out, ref) < 0.1  # e4m3 keeps 3 mantissa bits
    assert all(rel(a, b) < 0.12 for a, b in zip(grads, ref_grads))
    with torch.no_grad():  # inference: the same forward, no statistics
        assert torch.equal(attend(q, k, v), out.detach())


def test_key_mean_does_not_matter():
    """K is smoothed (its token mean removed) before quantising: a large common offset in K, which
    softmax ignores, must not cost precision."""
    q, k, v = qkv(seed=2)
    shifted = (k.detach() + 20.0).requires_grad_()
    assert rel(attend(q, shifted, v), exact(q, shifted, v)) < 0.1
    grad = torch.randn(1, 256, 2, 64, generator=torch.Generator().manual_seed(5))
    dk = torch.autograd.grad(attend(q, shifted, v), shifted, grad)[0]
    dk_ref = torch.autograd.grad(exact(q, shifted, v), shifted, grad)[0]
    assert rel(dk, dk_ref) < 0.12


def test_gradient_range_outgrowing_the_history_is_not_clipped():
    """Delayed scaling with a stale, far too small history: the backward sees the overflow in the
    amaxes it returns and runs again, instead of saturating the gradients."""
    q, k, v = qkv(seed=3)
    fp8_attention._GRAD_AMAX[(tuple(q.shape), "cpu")] = torch.full((4,), 1e-6)
    grad = 1e3 * torch.randn(1, 256, 2, 64, generator=torch.Generator().manual_seed(4))
    grads = torch.autograd.grad(attend(q, k, v), (q, k, v), grad)
    ref = torch.autograd.grad(exact(q, k, v), (q, k, v), grad)
    assert all(rel(a, b) < 0.12 for a, b in zip(grads, ref))
    assert fp8_attention._GRAD_AMAX[(tuple(q.shape), "cpu")].min() > 1e-3
