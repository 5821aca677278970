"""Train DiffHDR's LoRA on Wan-2.1-VACE.

    accelerate launch train.py --config configs/train.yaml [--resume_from_checkpoint DIR|latest]
    python train.py --config configs/tiny.yaml          # one process (debugging, the tiny demo)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from diffhdr.cli import HelpFormatter, run
from diffhdr.config import ConfigError, load_config
from diffhdr.errors import InputError

log = logging.getLogger("diffhdr.train")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (configs/train.yaml)")
    p.add_argument("--resume_from_checkpoint", help="a checkpoint folder, or 'latest' in output_dir")
    p.add_argument("--max_steps", type=int, help="stop after this global step (the schedule keeps num_steps)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the checkpoints and metrics of an earlier run in output_dir and start afresh")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    # imported after parsing, so that --help answers without loading torch
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, set_seed
    from tqdm.auto import tqdm

    from diffhdr import fp8_attention
    from diffhdr.attention import assert_no_cfa
    from diffhdr.checkpoint import (checkpoint_name, clear_earlier_run, earlier_run, latest_checkpoint, load_for_resume,
                                    load_optimizer_state, optimizer_state, save_checkpoint)
    from diffhdr.dataset import DrawSampler, HDRVideoDataset, collate, ignore_sigterm, list_sequences, validate_dataset
    from diffhdr.lora_io import trained_state
    from diffhdr.model import DiffHDRModel, compile_blocks, lora_inputs_stay_in_compute_dtype, torch_dtype
    from diffhdr.parallel import finish_distributed
    from diffhdr.prompting import TextCache
    from diffhdr.runtime import use_fp8_training_linears
    from diffhdr.tiny import BUILT_IN, resolve_backbone
    from diffhdr.training import StepClock, StopFlag, batch_loss, fsdp_plugin, lr_lambda, preflight, step_generator

    cfg = load_config(args.config)
    t = cfg.training
    # Before the first CUDA allocation. At 720p the caching allocator otherwise strands ~11 GiB in
    # fragments: FSDP2 ran out of memory without this and peaked at 69.4 GiB with it (one H100).
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    acc = Accelerator(mixed_precision=t.mixed_precision, log_with="wandb" if cfg.use_wandb else None,
                      fsdp_plugin=fsdp_plugin(t.mixed_precision))
    set_seed(t.seed)
    dist_kind = acc.distributed_type.value.lower().replace("_", " ")
    kind = "" if acc.distributed_type == DistributedType.NO else f" ({dist_kind})"
    log.info("%d process(es)%s, mixed precision: %s", acc.num_processes, kind, acc.mixed_precision)
    out = Path(cfg.output_dir)
    earlier = earlier_run(out)
    if earlier and not args.resume_from_checkpoint:
        if not args.overwrite:
            raise InputError(f"{out}: holds an earlier run ({', '.join(p.name for p in earlier[:3])}"
                             f"{', ...' if len(earlier) > 3 else ''}); resume it with --resume_from_checkpoint "
                             "latest, replace it with --overwrite, or set another output_dir")
        if acc.is_main_process:
            clear_earlier_run(out)
            log.info("--overwrite: removed the earlier run in %s", out)
    out.mkdir(parents=True, exist_ok=True)
    base = resolve_backbone(cfg.model.backbone)
    if acc.is_main_process:  # every frame, before minutes go into loading the model
        validate_dataset(list_sequences(cfg.data.dataset_root), cfg.data.frame_pattern, cfg.data.sequence_frames,
                         cfg.data.invalid_pixels, cfg.data.validate)
    acc.wait_for_everyone()

    # ---- model: frozen base, LoRA, checks
    model = DiffHDRModel.from_pretrained(base, dtype=torch_dtype(cfg.model.dtype))
    targets = model.add_lora(cfg.model) if cfg.model.lora_rank else model.train_whole() or []
    for p in model.transformer.parameters():
        if p.requires_grad:  # LoRA weights train in float32 whatever the base dtype
            p.data = p.data.float()
    if t.mixed_precision != "no" and targets:
        lora_inputs_stay_in_compute_dtype(model.transformer)
    for line in preflight(model, targets, cfg):
        if acc.is_main_process:
            print(line, flush=True)
    if cfg.model.gradient_checkpointing:
        model.enable_gradient_checkpointing(save_attention=cfg.model.checkpoint_save_attention)
    if acc.device.type == "cuda":
        model.transformer.set_attention_backend(cfg.model.attention_backend)
    if cfg.model.fp8_base:
        log.info("fp8 GEMMs in %d frozen linears", use_fp8_training_linears(model.transformer))
    if cfg.model.fp8_attention:
        head_dim = model.transformer.config.attention_head_dim
        if acc.device.type == "cuda" and not fp8_attention.available(acc.device, head_dim):
            raise ConfigError(f"{args.config}: model.fp8_attention needs a Hopper (sm90+) GPU, "
                              f"`pip install nvidia-cudnn-frontend` and heads of 128 (this model's: {head_dim})")
        log.info("fp8 attention in %d self-attention layers%s", fp8_attention.use_fp8_attention(model.transformer),
                 "" if acc.device.type == "cuda" else " (CPU: an emulation, for tests)")
    model.vae.to(acc.device)
    color = {"gamma": cfg.color_mapping.gamma, "M": cfg.color_mapping.M,
             "base_model": cfg.model.backbone if cfg.model.backbone in BUILT_IN else str(base),
             "lora_branch": cfg.model.lora_branch, "profile": cfg.profile}

    # ---- resume
    step, state = 0, None
    resume = args.resume_from_checkpoint
    if resume == "latest":
        resume = latest_checkpoint(out)
    if resume:
        step, state = load_for_resume(Path(resume), model.transformer, cfg.color_mapping.gamma, cfg.color_mapping.M)
        log.info("resuming from %s at step %d", resume, step)

    params = [p for p in model.transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    # DDP wraps the transformer; FSDP2 shards it in place (every block's weights split over the ranks)
    dit, optimizer = acc.prepare(model.transformer, optimizer)
    model.set_forward_module(dit)  # forward through DDP's wrapper; model.transformer stays plain
    sharded = acc.distributed_type == DistributedType.FSDP
    if state is not None:
        load_optimizer_state(dit, optimizer.optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
    if cfg.model.compile and acc.device.type == "cuda":  # after sharding, block by block (as FSDP2 wants)
        if acc.distributed_type == DistributedType.MULTI_GPU:
            # Dynamo's DDP optimizer splits each compiled block at gradient-bucket boundaries, and the
            # pieces then run rng-functionalised cuDNN attention under the selective-checkpoint mode,
            # which has no rule for it (NotImplementedError ... graphsafe_run_with_rng_state, on 2
            # H200s). The blocks are compiled one by one already, so DDP still overlaps its
            # all-reduce with the backward of the next block.
            torch._dynamo.config.optimize_ddp = False
        compile_blocks(model.transformer)

    # ---- data: draw numbers are a pure function of the step, so resume continues the stream
    micro_per_step = t.gradient_accumulation
    dataset = HDRVideoDataset(cfg, "train")
    sampler = DrawSampler(start=step * micro_per_step * t.batch_size, rank=acc.process_index, world=acc.num_processes)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=t.batch_size, sampler=sampler, num_workers=cfg.data.num_workers, collate_fn=collate,
        persistent_workers=cfg.data.num_workers > 0, worker_init_fn=ignore_sigterm,
    )
    val_set = HDRVideoDataset(cfg, "val", use_cache=False) if cfg.data.val_split else None
    # Every caption is encoded once; the text encoder then leaves the GPU for the DiT's activations.
    prompts = dataset.prompts() | (val_set.prompts() if val_set else set()) | {""}
    model.text_encoder.to(acc.device)
    texts = TextCache(model.tokenizer, model.text_encoder, prompts)
    model.text_encoder.to("cpu")
    log.info("encoded %d distinct prompts", len(prompts))
    if cfg.use_wandb:
        acc.init_trackers("diffhdr", config=asdict(cfg))

    def save(name):
        # every rank: under FSDP these gather the shards of the LoRA and of its optimizer state
        lora, optim = trained_state(model.transformer), optimizer_state(dit, optimizer.optimizer)
        if acc.is_main_process:
            training_state = {"optimizer": optim, "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state()}
            save_checkpoint(out / checkpoint_name(name), model.transformer, color, step, training_state, lora)
            log.info("saved %s", out / checkpoint_name(name))
        acc.wait_for_everyone()

    if cfg.initial_checkpoint and step == 0:
        save(0)

    assert_no_cfa(model.transformer)  # CFA is inference-only
    stop = StopFlag()
    last = min(t.num_steps, args.max_steps or t.num_steps)
    batches = iter(loader)
    dit.train()
    bar = tqdm(total=last, initial=step, desc="train", disable=not acc.is_main_process)
    first = None
    clock = StepClock(acc.device, step)
    while step < last:
        loss_sum = 0.0
        for micro in range(micro_per_step):
            micro_index = step * micro_per_step + micro
            if t.overfit_one_batch:
                first = first or next(batches)
                batch, micro_index = first, 0
            else:
                batch = next(batches)
            g = step_generator(t.seed, micro_index, acc.process_index, acc.num_processes)
            sync = micro == micro_per_step - 1
            with contextlib.nullcontext() if sync else acc.no_sync(dit), acc.autocast():
                loss = batch_loss(model, batch, cfg, g, acc.device, texts) / micro_per_step
                acc.backward(loss)
            loss_sum += loss.item()
        if t.max_grad_norm:
            acc.clip_grad_norm_(params, t.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)

        loss_mean = acc.reduce(torch.tensor(loss_sum, device=acc.device), "mean").item()
        if step % t.log_every == 0 or step == last:
            lr = scheduler.get_last_lr()[0]
            timing = clock.read(step, lambda x: acc.reduce(x, "max"))  # every rank: a collective
            log.info("step=%d/%d loss=%.5f lr=%.2e", step, t.num_steps, loss_mean, lr)
            if acc.is_main_process:
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps({"step": step, "loss": loss_mean, "lr": lr} | timing) + "\n")
            if cfg.use_wandb:
                acc.log({"loss/flow": loss_mean, "lr": lr, "step": step}, step=step)
        if val_set is not None and t.validate_every and step % t.validate_every == 0:
            validate(model, val_set, cfg, acc, out, step, texts, sharded)
        stopping = acc.reduce(torch.tensor(float(stop.set), device=acc.device), "max").item() > 0
        if step % t.checkpoint_every == 0 or stopping:
            save(step)
        if stopping:
            log.info("SIGTERM: stopped at step %d after checkpointing", step)
            bar.close()
            acc.end_training()
            finish_distributed()
            return 0
    bar.close()
    save("final")
    acc.end_training()
    finish_distributed()  # else a rank can hang at exit on NCCL's watchdog (seen under FSDP2, 2 H200s)
    return 0


def validate(model, val_set, cfg, acc, out: Path, step: int, texts, sharded: bool):
    """On rank 0; with sharded weights every rank runs it (each forward gathers from all), rank 0 writes."""
    from diffhdr.training import validation_loss, write_validation_sample

    if not (acc.is_main_process or sharded):
        acc.wait_for_everyone()
        return
    model.transformer.eval()
    sample_dir = out / "validation" / f"step-{step:06d}" if acc.is_main_process else None
    with acc.autocast(), model.unwrapped():
        loss = validation_loss(model, val_set, cfg, acc.device, texts)
        write_validation_sample(model, val_set[0], cfg, sample_dir, steps=10, device=acc.device, texts=texts)
    model.transformer.train()
    if acc.is_main_process:
        log.info("step=%d val_loss=%.5f sample=%s", step, loss, sample_dir)
        if cfg.use_wandb:
            acc.log({"loss/val": loss}, step=step)
    acc.wait_for_everyone()


if __name__ == "__main__":
    run(main)
