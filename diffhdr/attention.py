"""Context-Focused Cross-Attention (CFA), inference only.

In every main DiT block (and optionally every VACE block) the cross-attention CA of the
normalised tokens x is evaluated against three text embeddings and mixed per token:

    r0 = CA(x, c_null)
    r  = r0 + a_o * m_o * (CA(x, c_over) - r0) + a_u * m_u * (CA(x, c_under) - r0)

m_o, m_u in {0, 1} are the over/under exposure masks on the token grid (B, S, 1); where both are
set they are normalised, m <- m / max(1, m_o + m_u) (the authors' release, reference-facts
section 5). Because CA's output projection is affine and the gates are per token, the mix is
taken before that projection: one `to_out` call instead of three, with the same result.

The text travels as one sequence of K equal chunks [full | null | over | under], so it passes
through the model's own text projection unchanged. CFA processors use chunks 1..3; cross-attention
without CFA (VACE blocks by default) uses chunk 0, the full caption the model was trained on.
An unconditional CFG branch puts its negative prompt in all four chunks and routes nothing (no
gates), which is standard attention on its text: the processor then attends to one chunk only.

Under context parallelism (diffhdr.parallel) each rank holds a contiguous shard of the tokens;
the gates are sharded the same way, and the text is whole on every rank, so CFA stays local.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn

from .parallel import shard_tokens

N_CHUNKS = 4  # full, null, over, under


@dataclass
class CFAState:
    """Per-run routing, shared by all CFA processors. Gates (B, S, 1) on the token grid."""

    gate_over: torch.Tensor | None = None
    gate_under: torch.Tensor | None = None
    alpha_over: float = 1.0
    alpha_under: float = 1.0

    def normalised(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        m_o, m_u = self.gate_over, self.gate_under
        if m_o is not None and m_u is not None:
            denom = torch.clamp(m_o + m_u, min=1.0)
            m_o, m_u = m_o / denom, m_u / denom
        return m_o, m_u


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(2, (heads, -1))  # (B, S, H, Dh)


def _attend(attn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend) -> torch.Tensor:
    out = dispatch_attention_fn(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, backend=backend)
    return out.flatten(2, 3).type_as(q)


class ChunkAttnProcessor:
    """Standard cross-attention against one chunk of the packed text sequence."""

    _attention_backend = None
    _parallel_config = None

    def __init__(self, chunk: int = 0):
        self.chunk = chunk

    def _kv(self, attn, context: torch.Tensor):
        k = _heads(attn.norm_k(attn.to_k(context)), attn.heads)
        v = _heads(attn.to_v(context), attn.heads)
        return k, v

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        ctx = encoder_hidden_states.chunk(N_CHUNKS, dim=1)[self.chunk]
        q = _heads(attn.norm_q(attn.to_q(hidden_states)), attn.heads)
        k, v = self._kv(attn, ctx)
        out = _attend(attn, q, k, v, self._attention_backend)
        return attn.to_out[1](attn.to_out[0](out))


class CFAAttnProcessor(ChunkAttnProcessor):
    def __init__(self, state: CFAState):
        super().__init__(chunk=1)
        self.state = state

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        a_o, a_u = self.state.alpha_over, self.state.alpha_under
        m_o, m_u = (None if m is None or not a else shard_tokens(m, self._parallel_config)
                    for m, a in zip(self.state.normalised(), (a_o, a_u)))
        if m_o is None and m_u is None:  # nothing mixed in (an unconditional branch, alphas 0): the null chunk
            return super().__call__(attn, hidden_states, encoder_hidden_states)
        q = _heads(attn.norm_q(attn.to_q(hidden_states)), attn.heads)  # (B, S, H, Dh)
        # K/V of null, over and under in one projection each
        _, *ctxs = encoder_hidden_states.chunk(N_CHUNKS, dim=1)
        k, v = self._kv(attn, torch.cat(ctxs, dim=1))
        (k0, k1, k2), (v0, v1, v2) = k.chunk(3, dim=1), v.chunk(3, dim=1)
        r0 = _attend(attn, q, k0, v0, self._attention_backend)  # (B, S, C)
        r = r0
        if m_o is not None:
            r = r + (a_o * m_o).to(r0) * (_attend(attn, q, k1, v1, self._attention_backend) - r0)
        if m_u is not None:
            r = r + (a_u * m_u).to(r0) * (_attend(attn, q, k2, v2, self._attention_backend) - r0)
        return attn.to_out[1](attn.to_out[0](r))


def cross_attentions(transformer, vace: bool):
    for block in transformer.blocks:
        yield block.attn2, True
    for block in getattr(transformer, "vace_blocks", []):
        yield block.attn2, vace


@contextlib.contextmanager
def cfa_enabled(transformer, state: CFAState, vace: bool = False):
    """Install CFA on the cross-attention of the main blocks (and VACE blocks if `vace`) for the
    duration of the block; restore the original processors afterwards, even on error."""
    saved = []
    backend = None
    for attn, use_cfa in cross_attentions(transformer, vace):
        saved.append((attn, attn.processor))
        backend = getattr(attn.processor, "_attention_backend", None)
        proc = CFAAttnProcessor(state) if use_cfa else ChunkAttnProcessor(0)
        proc._attention_backend = backend
        proc._parallel_config = getattr(attn.processor, "_parallel_config", None)
        attn.set_processor(proc)
    try:
        yield state
    finally:
        for attn, proc in saved:
            attn.set_processor(proc)


def packed_text(full: torch.Tensor, null: torch.Tensor, over: torch.Tensor, under: torch.Tensor) -> torch.Tensor:
    """(B, L, D) x 4 -> (B, 4L, D), the layout the processors above expect."""
    return torch.cat([full, null, over, under], dim=1)


def assert_no_cfa(transformer) -> None:
    """CFA is inference-only: training must run with the model's own attention."""
    for name, module in transformer.named_modules():
        proc = getattr(module, "processor", None)
        assert not isinstance(proc, ChunkAttnProcessor), f"CFA processor installed on {name} during training"
