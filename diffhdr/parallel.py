"""Inference across GPUs: context parallelism through diffusers (Ulysses or ring attention).

Every rank runs the same pipeline on the same inputs; inside the DiT the video tokens are split
into equal contiguous shards, one per rank, and only self-attention talks across ranks
(all-to-all for Ulysses, rotating K/V for ring). Cross-attention reads the whole text on every
rank, so it stays local; the CFA gates are sharded exactly like the tokens they route.

WanVACETransformer3DModel ships no `_cp_plan` (plain Wan does). VACE_CP_PLAN is the Wan plan plus
the VACE branch: the rotary tables are split as they are made; the first VACE block receives the
video tokens and the VACE context tokens (it adds them), so both are split there; the later VACE
blocks only chain their own (already split) context; the hints they return are added to the split
main stream; the output is gathered before `proj_out`'s result is unpatchified.

    torchrun --nproc_per_node 4 inference.py ... --context_parallel ulysses
"""

from __future__ import annotations

import logging
import os

import torch
import torch.distributed as dist

from .io import InputError

log = logging.getLogger(__name__)

CP_KINDS = ("ulysses", "ring")


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


def enable_context_parallel(transformer, kind: str = "ulysses") -> None:
    """Shard the DiT's tokens over all ranks of the initialised process group."""
    from diffusers import ContextParallelConfig
    from diffusers.models._modeling_parallel import ParallelConfig

    if kind not in CP_KINDS:
        raise ValueError(f"context parallelism must be one of {CP_KINDS}")
    world = dist.get_world_size()
    heads = transformer.config.num_attention_heads
    if kind == "ulysses" and heads % world:
        raise InputError(f"Ulysses needs the {heads} attention heads divisible by the {world} GPUs; use ring")
    gpu = torch.accelerator.device_count() > 0
    if kind == "ring":
        if not gpu:
            raise InputError("ring attention needs a GPU kernel that returns the log-sum-exp; on CPU use ulysses")
        transformer.set_attention_backend("_native_cudnn")  # the default SDPA path returns no LSE
    cp = ContextParallelConfig(**{f"{kind}_degree": world})
    if gpu:
        transformer.enable_parallelism(config=cp, cp_plan=vace_cp_plan())
    else:
        # CPU + gloo (the tests): diffusers' enable_parallelism picks a device by
        # rank % torch.accelerator.device_count(), which is 0 here; the same steps, on the CPU.
        from diffusers.hooks.context_parallel import apply_context_parallel

        mesh = dist.device_mesh.init_device_mesh("cpu", cp.mesh_shape, mesh_dim_names=cp.mesh_dim_names)
        config = ParallelConfig(context_parallel_config=cp)
        config.setup(dist.get_rank(), world, torch.device("cpu"), mesh=mesh)
        transformer._parallel_config = config
        for module in transformer.modules():
            if hasattr(getattr(module, "processor", None), "_parallel_config"):
                module.processor._parallel_config = config
        apply_context_parallel(transformer, cp, vace_cp_plan())
    log.info("context parallelism: %s over %d ranks", kind, world)


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
