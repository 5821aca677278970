"""Inference across GPUs: CFG-parallel and context parallelism (Ulysses or ring attention).

The ranks form a mesh (cfg, ring, ulysses):
- cfg (2 with --cfg_parallel, else 1): as xDiT does, one half of the ranks computes the
  conditional forward of a guided step and the other half the unconditional one; the two
  predictions are exchanged (one all-gather of a latent-sized tensor per step). Steps without
  guidance compute the conditional forward on both halves.
- ring x ulysses (the rest): context parallelism through diffusers. Every rank of a branch runs
  the same pipeline on the same inputs; inside the DiT the video tokens are split into equal
  contiguous shards, one per rank, and only self-attention talks across ranks (all-to-all for
  Ulysses, rotating K/V for ring). Cross-attention reads the whole text on every rank, so it
  stays local; the CFA gates are sharded exactly like the tokens they route.

WanVACETransformer3DModel ships no `_cp_plan` (plain Wan does). VACE_CP_PLAN is the Wan plan plus
the VACE branch: the rotary tables are split as they are made; the first VACE block receives the
video tokens and the VACE context tokens (it adds them), so both are split there; the later VACE
blocks only chain their own (already split) context; the hints they return are added to the split
main stream; the output is gathered before `proj_out`'s result is unpatchified.

    torchrun --nproc_per_node 4 inference.py ... --context_parallel ulysses
    torchrun --nproc_per_node 2 inference.py ... --cfg_parallel      # 2 GPUs: the two CFG branches
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import InputError
from .options import CP_KINDS

log = logging.getLogger(__name__)


def vace_cp_plan() -> dict:
    from diffusers.models._modeling_parallel import ContextParallelInput, ContextParallelOutput

    tokens = ContextParallelInput(split_dim=1, expected_dims=3, split_output=False)
    rope = ContextParallelInput(split_dim=1, expected_dims=4, split_output=True)
    return {
        "rope": {0: rope, 1: rope},
        "vace_blocks.0": {"hidden_states": tokens, "control_hidden_states": tokens},
        "blocks.0": {"hidden_states": tokens},
        "proj_out": ContextParallelOutput(gather_dim=1, expected_dims=3),
    }


def init_distributed(device: str) -> tuple[int, int]:
    """Join the process group torchrun / accelerate launch describe in the environment (no-op for
    one process). Returns (rank, world size); on CUDA each rank takes the GPU of its local rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def local_device(device: str) -> torch.device:
    d = torch.device(device)
    return torch.device("cuda", torch.cuda.current_device()) if d.type == "cuda" else d


def finish_distributed() -> None:
    """Leave the process group (NCCL warns at exit otherwise); a no-op for one process."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


@dataclass
class CFGParallel:
    """This rank's place among the two CFG branches: `branch` 0 computes the conditional forward,
    1 the unconditional one; `group` joins it with its counterpart of the other branch."""

    group: object  # torch.distributed.ProcessGroup
    branch: int

    def exchange(self, mine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's prediction in, (conditional, unconditional) out, the same on every rank."""
        both = mine.new_empty((2 * mine.shape[0], *mine.shape[1:]))
        dist.all_gather_into_tensor(both, mine.contiguous(), group=self.group)
        return both.chunk(2)


def setup_parallelism(transformer, kind: str, cfg_parallel: bool, device) -> CFGParallel | None:
    """Arrange the ranks of the initialised process group as (cfg, ring, ulysses) and apply the
    context parallelism of the last two to the DiT. Returns this rank's CFG branch, or None."""
    world = dist.get_world_size()
    branches = 2 if cfg_parallel else 1
    if world % branches:
        raise InputError(f"--cfg_parallel splits the GPUs into two halves: {world} GPUs do not")
    cp = world // branches
    shape = {"cfg": branches, "ring": cp if kind == "ring" else 1, "ulysses": cp if kind == "ulysses" else 1}
    mesh = dist.device_mesh.init_device_mesh(torch.device(device).type, tuple(shape.values()),
                                             mesh_dim_names=tuple(shape))
    if cp > 1:
        enable_context_parallel(transformer, kind, mesh)
    if not cfg_parallel:
        return None
    log.info("CFG-parallel: the two guidance branches on %d GPU(s) each", cp)
    return CFGParallel(mesh["cfg"].get_group(), mesh.get_local_rank("cfg"))


def enable_context_parallel(transformer, kind: str, mesh) -> None:
    """Shard the DiT's tokens over the ring x ulysses dimensions of `mesh` (this rank's slice)."""
    from diffusers import ContextParallelConfig
    from diffusers.models._modeling_parallel import ParallelConfig

    if kind not in CP_KINDS:
        raise ValueError(f"context parallelism must be one of {CP_KINDS}")
    world = mesh["ring", "ulysses"].size()
    heads = transformer.config.num_attention_heads
    if kind == "ulysses" and heads % world:
        raise InputError(f"Ulysses needs the {heads} attention heads divisible by the {world} GPUs; use ring")
    gpu = torch.accelerator.device_count() > 0
    if kind == "ring":
        if gpu:
            transformer.set_attention_backend("_native_cudnn")  # the default SDPA path returns no LSE
        elif not _cpu_kernel_returns_lse():
            raise InputError("ring attention needs a kernel that returns the log-sum-exp (cuDNN or flash on a GPU); "
                             "on CPU use ulysses")
    cp = ContextParallelConfig(**{f"{kind}_degree": world}, mesh=mesh)
    if gpu:
        transformer.enable_parallelism(config=cp, cp_plan=vace_cp_plan())
    else:
        # CPU + gloo (the tests): diffusers' enable_parallelism picks a device by
        # rank % torch.accelerator.device_count(), which is 0 here; the same steps, on the CPU.
        from diffusers.hooks.context_parallel import apply_context_parallel

        config = ParallelConfig(context_parallel_config=cp)
        config.setup(dist.get_rank(), dist.get_world_size(), torch.device("cpu"), mesh=mesh)
        transformer._parallel_config = config
        for module in transformer.modules():
            if hasattr(getattr(module, "processor", None), "_parallel_config"):
                module.processor._parallel_config = config
        apply_context_parallel(transformer, cp, vace_cp_plan())
    log.info("context parallelism: %s over %d ranks", kind, world)


def _cpu_kernel_returns_lse() -> bool:
    """Whether diffusers' native attention kernel, the CPU's, gives ring attention its log-sum-exp
    (torch's does not; bench/check_ring_cpu.py puts in an exact one that does)."""
    import diffusers.models.attention_dispatch as ad

    q = torch.zeros(1, 1, 1, 8)
    try:
        ad._native_attention_forward_op(None, q, q, q, return_lse=True, _save_ctx=False)
    except ValueError:
        return False
    return True


def check_token_split(transformer, n_tokens: int) -> None:
    """One-line error, before any work, when the tokens of a window cannot be split evenly."""
    config = getattr(transformer, "_parallel_config", None)
    if config is None or config.context_parallel_config is None:
        return
    world = config.context_parallel_config._flattened_mesh.size()
    if n_tokens % world:
        raise InputError(f"{n_tokens} DiT tokens per window do not split evenly over {world} GPUs; "
                         "choose another --height or --num_frames")


def shard_tokens(x: torch.Tensor, parallel_config) -> torch.Tensor:
    """This rank's shard of a per-token tensor (B, S, ...), split as the CP plan splits tokens."""
    if parallel_config is None or parallel_config.context_parallel_config is None:
        return x
    from diffusers.hooks.context_parallel import EquipartitionSharder

    return EquipartitionSharder.shard(x, 1, parallel_config.context_parallel_config._flattened_mesh)
