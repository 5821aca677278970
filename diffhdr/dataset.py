"""HDRVideoDataset: sequences of linear EXR frames -> (HDR target, synthetic LDR condition, masks, caption).

Layout (spec)::

    <root>/sequence_xxx/frame_00000.exr ... frame_00080.exr, caption.txt,
                        latents/clip_0000_latent.pt ...
    <root>/latent_config.json            gamma, M, resolution the latents were made with

Items are addressed by a *draw number* d = 0, 1, 2, ...: the sequence is the d-th entry of a
per-epoch permutation and every random choice (clip start, crop, flip, EV, noise) comes from a
generator seeded by (seed, d). So the data stream is a pure function of the step count, which is
what makes resume exact and multi-process sampling disjoint.

The loader workers only read and crop (about 0.8 s a 33 x 720 x 1280 clip on one core);
`condition_batch` then makes the LDR, masks and Log-Gamma on the training device, where those
91M-value elementwise passes take milliseconds instead of ~30 s of CPU.
"""

from __future__ import annotations

import logging
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .color_mapping import srgb_to_linear, to_vae_range, to_vae_video
from .config import AugmentationConfig, Config
from .data_augmentation import draw_ev, grey_fill, synthesize_ldr
from .errors import InputError
from .io import exr_size, read_hdr_image, read_json
from .mask_detection import combine, detect_masks
from .prompting import NULL_CAPTION, is_hybrid, parse_caption, training_prompt

log = logging.getLogger(__name__)

LATENT_CONFIG = "latent_config.json"
_LATENT_NAME = re.compile(r"clip_(\d{4})_latent\.pt$")


def latent_path(seq_dir: Path, start: int) -> Path:
    return seq_dir / "latents" / f"clip_{start:04d}_latent.pt"


def list_sequences(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset root not found")
    seqs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not seqs:
        raise InputError(f"{root}: no sequence folders")
    return seqs


def split_sequences(seqs: list[Path], val_split: int, split: str) -> list[Path]:
    """The last `val_split` sequences (sorted) are validation; the rest train."""
    if val_split >= len(seqs) and split == "train":
        raise InputError(
            f"{seqs[0].parent}: {len(seqs)} sequences but data.val_split={val_split} holds them all out; "
            "reduce data.val_split"
        )
    if split == "train":
        return seqs[: len(seqs) - val_split] if val_split else seqs
    if split == "val":
        return seqs[len(seqs) - val_split :] if val_split else []
    raise ValueError(f"split must be 'train' or 'val', got {split!r}")


def check_radiance(frame: np.ndarray, path: Path, policy: str) -> np.ndarray:
    bad_nan = int(np.isnan(frame).sum())
    bad_inf = int(np.isinf(frame).sum())
    bad_neg = int((frame < 0).sum())
    if bad_nan or bad_inf or bad_neg:
        if policy == "error":
            raise InputError(
                f"{path}: {bad_nan} NaN, {bad_inf} Inf and {bad_neg} negative values "
                "(set data.invalid_pixels: clamp to replace them with 0)"
            )
        frame = np.nan_to_num(frame, nan=0.0, posinf=0.0, neginf=0.0).clip(0, None)
    return frame


def read_frames(seq_dir: Path, pattern: str, start: int, count: int, policy: str = "error") -> torch.Tensor:
    """Frames start..start+count-1 as linear float32 (T, 3, H, W)."""
    frames, size = [], None
    for i in range(start, start + count):
        path = seq_dir / (pattern % i)
        if not path.is_file():
            raise InputError(f"{path}: frame {i} is missing")
        img = check_radiance(read_hdr_image(path), path, policy)
        if size is None:
            size = img.shape
        elif img.shape != size:
            raise InputError(f"{path}: frame is {img.shape[1]}x{img.shape[0]}, earlier frames {size[1]}x{size[0]}")
        frames.append(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1))
    return torch.stack(frames)


def _frame_problem(path: Path, full: bool, policy: str) -> tuple[str | None, tuple[int, int] | None]:
    """(what is wrong with one frame file or None, its (H, W) or None)."""
    try:
        if not full and path.suffix.lower() == ".exr":
            return None, exr_size(path)
        img = read_hdr_image(path)
        if full and policy == "error":
            check_radiance(img, path, policy)
        return None, img.shape[:2]
    except InputError as e:
        return str(e), None


def validate_dataset(seqs: list[Path], pattern: str, frames: int, policy: str, mode: str,
                     progress: bool = True) -> None:
    """Check every frame of every sequence before training starts, and report every bad file at once
    (logged, one per line; the error names the first). `mode`: see DataConfig.validate."""
    if mode == "off":
        return
    paths = {s: [s / (pattern % i) for i in range(count_frames(s, pattern))] for s in seqs}
    problems = [f"{s}: {len(p)} frames matching {pattern}, expected data.sequence_frames={frames}"
                for s, p in paths.items() if len(p) != frames]
    files = [f for p in paths.values() for f in p]
    full, done = mode == "full", {}
    if mode == "auto" and files:  # a full scan when the first frames say it ends within a minute
        t0 = time.perf_counter()
        done = {f: _frame_problem(f, True, policy) for f in files[:8]}
        full = (time.perf_counter() - t0) / len(done) * len(files) < 60
        if not full:
            done = {}
    sizes: dict[Path, set] = {}
    for f in tqdm(files, desc=f"checking frames ({'pixels' if full else 'headers'})", disable=not progress):
        problem, size = done[f] if f in done else _frame_problem(f, full, policy)
        if problem:
            problems.append(problem)
        elif size:
            sizes.setdefault(f.parent, set()).add(size)
    problems += [f"{s}: frames of different sizes ({', '.join(f'{w}x{h}' for h, w in sorted(v))})"
                 for s, v in sizes.items() if len(v) > 1]
    if problems:
        for p in problems:
            log.error("%s", p)
        raise InputError(f"{len(problems)} problem(s) in the dataset (each logged above); the first: {problems[0]}")
    log.info("dataset checked: %d sequences, %d frames (%s)", len(seqs), len(files),
             "every pixel" if full else "headers")


def count_frames(seq_dir: Path, pattern: str) -> int:
    n = 0
    while (seq_dir / (pattern % n)).is_file():
        n += 1
    return n


def resize_to_cover(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Downscale (T, C, H, W) so it still covers h x w (never upscale)."""
    s = max(h / x.shape[-2], w / x.shape[-1])
    if s >= 1.0:
        return x
    size = (max(h, round(x.shape[-2] * s)), max(w, round(x.shape[-1] * s)))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def crop_offsets(H: int, W: int, h: int, w: int, g: torch.Generator | None) -> tuple[int, int]:
    """Centre crop when g is None (cached latents need it), else a random crop."""
    if g is None:
        return (H - h) // 2, (W - w) // 2
    top = int(torch.randint(0, H - h + 1, (), generator=g))
    left = int(torch.randint(0, W - w + 1, (), generator=g))
    return top, left


def read_caption(seq_dir: Path) -> str:
    path = seq_dir / "caption.txt"
    if not path.is_file():
        log.warning("%s: no caption.txt; using the null caption (run scripts/generate_captions.py)", seq_dir)
        return NULL_CAPTION
    cap = parse_caption(path.read_text())
    if cap is None:
        log.warning("%s: not in the [Overexposed: ...]; [Underexposed: ...] format; using the null caption", path)
        return NULL_CAPTION
    return cap.text()


def read_scene(seq_dir: Path) -> str:
    """The optional free-text scene caption (scene.txt), used by the release's prompt mix only."""
    path = seq_dir / "scene.txt"
    return " ".join(path.read_text().split()) if path.is_file() else ""


def read_latent_config(root: Path) -> dict | None:
    path = root / LATENT_CONFIG
    return read_json(path) if path.is_file() else None


def check_latent_config(root: Path, gamma: float, M: float, resolution: list[int]) -> None:
    """Refuse cached latents made with another gamma/M/resolution: they would be silent garbage."""
    lc = read_latent_config(root)
    if lc is None:
        return
    want = {"gamma": gamma, "M": M, "clip_frames": resolution[0], "resolution": list(resolution[1:])}
    for k, v in want.items():
        if k in lc and (lc[k] != v if not isinstance(v, float) else abs(float(lc[k]) - v) > 1e-9):
            raise InputError(
                f"{root / LATENT_CONFIG}: cached latents were made with {k}={lc[k]}, the config says {v}; "
                "delete the latents/ folders and rerun scripts/precompute_hdr_latents.py"
            )


@dataclass
class Item:
    hdr: torch.Tensor  # (T, 3, H, W) linear HDR crop: the LDR is made from it (and the target, if not cached)
    latent: torch.Tensor | None  # (16, T', H/8, W/8) cached VAE latent of the target, or None
    prompt: str
    ev: int
    seed: int  # seeds the augmentation generator on the training device
    sequence: str
    start: int
    hybrid: bool = False  # the release's text-to-video sample (prompting.is_hybrid)
    reference: bool = False  # the release's reference image leads this sample (training.reference_image)


def ignore_sigterm(_worker_id: int) -> None:
    """DataLoader workers leave SIGTERM to the main process, which finishes its step and checkpoints.
    SLURM and `timeout` signal the whole process group: a worker killed by it failed that last step."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def collate(items: list[Item]) -> dict:
    stack = lambda xs: None if xs[0] is None else torch.stack(xs)  # noqa: E731
    return {
        "latent": stack([i.latent for i in items]),
        "hdr": stack([i.hdr for i in items]),
        "prompt": [i.prompt for i in items],
        "ev": [i.ev for i in items],
        "seed": [i.seed for i in items],
        "sequence": [i.sequence for i in items],
        "start": [i.start for i in items],
        "hybrid": [i.hybrid for i in items],
        "reference": [i.reference for i in items],
    }


@dataclass
class Conditioned:
    target: torch.Tensor | None  # (B, 3, T, H, W) Log-Gamma HDR in [-1, 1]; None with cached latents
    control: torch.Tensor  # (B, 3, T, H, W) Log-Gamma of the linearised LDR, in [-1, 1]
    mask: torch.Tensor  # (B, T, H, W) binary over ∪ under
    ldr: torch.Tensor  # (B, T, 3, H, W) 8-bit sRGB LDR before the grey fill (grey for a hybrid sample)
    reference: torch.Tensor | None = None  # (B, 3, H, W) in [-1, 1]: the release's training reference


REFERENCE_FROM = 0.625  # the release: a reference image when its sample draw u >= 0.625 (37.5%)


def hybrid_target(hdr: torch.Tensor, ev: int, cfg: AugmentationConfig) -> torch.Tensor:
    """A hybrid sample's target: the HDR as it is, clipped; the release clips after its EV shift."""
    if cfg.hybrid_clip_exposed:
        return (hdr * 2.0**ev).clamp(0.0, cfg.radiance_clip) * 2.0**-ev
    return hdr.clamp(0.0, cfg.radiance_clip)


def condition_batch(batch: dict, cfg: Config, device) -> Conditioned:
    """HDR crops -> (Log-Gamma target, LDR condition, exposure mask), on `device`.
    A hybrid sample (the release's text-to-video share) gets a uniform grey control, an all-ones
    mask and the target with the exposure shift undone (reference-facts section 3)."""
    gm = (cfg.color_mapping.gamma, cfg.color_mapping.M)
    targets, controls, masks, ldrs, refs = [], [], [], [], []
    for hdr, ev, seed, hybrid, with_ref in zip(batch["hdr"], batch["ev"], batch["seed"], batch["hybrid"],
                                               batch["reference"]):
        if hybrid:  # nothing shown, everything to generate: no LDR to synthesise, no masks to detect
            target = hybrid_target(hdr.to(device), ev, cfg.augmentation)
            ldr = shown = torch.full_like(target, cfg.augmentation.grey_value)
            mask = torch.ones_like(target[:, 0])  # (T, H, W)
        else:
            g = torch.Generator(device=device).manual_seed(seed)
            sample = synthesize_ldr(hdr.to(device), g, cfg.augmentation, ev=ev)
            over, under = detect_masks(sample.ldr, cfg.masks, training=True)
            ldr = grey_fill(sample.ldr, over, under, g, cfg.augmentation, cfg.masks.use_under)
            target, mask, shown = sample.hdr, combine(over, under, cfg.masks.use_under), sample.ldr
        if with_ref:  # the first target frame, linear: the release applies 2x - 1 and no Log-Gamma
            refs.append(to_vae_range(target[0]))
        controls.append(to_vae_video(srgb_to_linear(ldr), *gm))
        targets.append(to_vae_video(target, *gm))
        masks.append(mask)
        ldrs.append(shown)
    cached = batch["latent"] is not None
    return Conditioned(None if cached else torch.stack(targets), torch.stack(controls), torch.stack(masks),
                       torch.stack(ldrs), torch.stack(refs) if refs else None)


class HDRVideoDataset(torch.utils.data.Dataset):
    """Map-style over draw numbers (any int >= 0); `len` is the number of sequences."""

    def __init__(self, cfg: Config, split: str = "train", seed: int | None = None, use_cache: bool = True):
        self.cfg = cfg
        self.root = Path(cfg.data.dataset_root)
        self.seqs = split_sequences(list_sequences(self.root), cfg.data.val_split, split)
        self.split = split
        self.seed = cfg.training.seed if seed is None else seed
        self.clip_frames, self.h, self.w = cfg.training.resolution
        self.cached_starts: dict[Path, list[int]] = {}
        if use_cache:
            check_latent_config(self.root, cfg.color_mapping.gamma, cfg.color_mapping.M, cfg.training.resolution)
            for s in self.seqs:
                d = s / "latents"
                if d.is_dir():
                    starts = sorted(int(m.group(1)) for p in d.iterdir() if (m := _LATENT_NAME.match(p.name)))
                    if starts:
                        self.cached_starts[s] = starts
        if self.cached_starts and self.cached_starts.keys() != set(self.seqs):
            log.warning("latents cached for %d of %d sequences", len(self.cached_starts), len(self.seqs))

    def __len__(self) -> int:
        return len(self.seqs)

    def prompts(self) -> set[str]:
        """Every text an item of this split can carry (for the training text cache)."""
        captions = {read_caption(s) for s in self.seqs}
        if self.cfg.training.prompt_mix == "reference":
            captions |= {""} | {read_scene(s) for s in self.seqs}
        return captions

    def sequence_for(self, draw: int) -> Path:
        n = len(self.seqs)
        epoch, k = divmod(draw, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
        return self.seqs[int(perm[k])] if self.split == "train" else self.seqs[draw % n]

    def __getitem__(self, draw: int) -> Item:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(draw))
        seq = self.sequence_for(int(draw))
        cfg, T = self.cfg, self.clip_frames
        cached = self.cached_starts.get(seq)
        if cached:
            start = cached[int(torch.randint(0, len(cached), (), generator=g))]
        else:
            n = count_frames(seq, cfg.data.frame_pattern)
            if n != cfg.data.sequence_frames:
                raise InputError(
                    f"{seq}: {n} frames matching {cfg.data.frame_pattern}, expected data.sequence_frames="
                    f"{cfg.data.sequence_frames}"
                )
            start = int(torch.randint(0, n - T + 1, (), generator=g))
        hdr = read_frames(seq, cfg.data.frame_pattern, start, T, cfg.data.invalid_pixels)  # (T, 3, H, W)
        H, W = hdr.shape[-2:]
        if H < self.h or W < self.w:
            raise InputError(f"{seq}: frames are {W}x{H}, smaller than the {self.w}x{self.h} training crop")
        hdr = resize_to_cover(hdr, self.h, self.w)
        top, left = crop_offsets(hdr.shape[-2], hdr.shape[-1], self.h, self.w, None if cached else g)
        hdr = hdr[..., top : top + self.h, left : left + self.w]
        flip = cfg.data.hflip and bool(torch.rand((), generator=g) < 0.5)
        if flip:
            hdr = hdr.flip(-1)

        latent = None
        if cached:
            latent = torch.load(latent_path(seq, start), map_location="cpu", weights_only=True).float()
            if flip:
                latent = latent.flip(-1)
        # A cached latent pins the target's exposure, so the LDR is made at EV 0 to match it.
        ev = 0 if cached else draw_ev(g, cfg.augmentation)
        seed = int(torch.randint(0, 2**62, (), generator=g))
        u, mix = float(torch.rand((), generator=g)), cfg.training.prompt_mix
        hybrid = is_hybrid(u, mix)
        prompt = training_prompt(read_caption(seq), u, mix, read_scene(seq) if hybrid else "")
        reference = cfg.training.reference_image and u >= REFERENCE_FROM
        return Item(hdr, latent, prompt, ev, seed, seq.name, start, hybrid, reference)


class DrawSampler(torch.utils.data.Sampler):
    """Endless draw numbers start, start+1, ... for one process of `world` (rank-strided)."""

    def __init__(self, start: int = 0, rank: int = 0, world: int = 1):
        self.start, self.rank, self.world = start, rank, world

    def __iter__(self):
        d = self.start * self.world + self.rank
        while True:
            yield d
            d += self.world
