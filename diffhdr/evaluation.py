"""What evaluate.py does once its arguments are parsed: find the sequences, load and check their
frames, score them (diffhdr.metrics), write scores.json, the CSVs and the per-frame plot."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np

from . import metrics as M
from .colorspace import convert, space_of
from .errors import InputError
from .io import IMAGE_EXTS, atomic_path, exr_chromaticities, read_exr, read_video
from .options import BENCHMARKS, METRICS
from .outputs import preview_frames

log = logging.getLogger("diffhdr.evaluate")


def find_sequences(root: Path) -> dict[str, Path]:
    """{name: folder of EXR frames}. A folder of EXRs is one sequence named after the folder."""
    if not root.is_dir():
        raise InputError(f"{root}: folder not found")
    if any(root.glob("*.exr")):
        return {root.name if root.name != "exr" else root.parent.name: root}
    seqs = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        frames = d / "exr" if (d / "exr").is_dir() else d
        if any(frames.glob("*.exr")):
            seqs[d.name] = frames
    if not seqs:
        others = sorted(p.name for p in root.iterdir() if p.is_file())[:3]
        hint = f" (found {', '.join(others)}: not EXR)" if others else ""
        raise InputError(f"{root}: no EXR frames{hint}")
    return seqs


def load_frames(folder: Path) -> np.ndarray:
    files = sorted(folder.glob("*.exr"))
    strays = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() != ".exr")
    if strays:
        raise InputError(f"{folder}: holds non-EXR files ({', '.join(strays[:3])})")
    frames = [read_exr(p) for p in files]
    space = space_of(exr_chromaticities(files[0]), files[0]) if files else "rec709"
    frames = [convert(f, space, "rec709") for f in frames]  # ACES output scores against Rec.709 ground truth
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise InputError(f"{folder}: frames differ in size ({', '.join(sorted(map(str, sizes)))})")
    video = np.stack(frames)
    bad = ~np.isfinite(video)
    if bad.any():
        which = [files[i].name for i in np.flatnonzero(bad.reshape(len(video), -1).any(1))]
        raise InputError(f"{folder}: {int(bad.sum())} NaN/Inf values in {len(which)} frames ({', '.join(which[:5])})")
    return video


def choose_metrics(a) -> list[str]:
    if a.benchmark:
        names = BENCHMARKS[a.benchmark] if a.metrics == "all" else a.metrics.split(",")
    elif a.metrics == "all":
        names = [m for m, info in METRICS.items()
                 if (a.gt_dir or not info.needs_gt) and (a.ldr or not info.needs_ldr)]
    else:
        names = [m.strip() for m in a.metrics.split(",") if m.strip()]
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metric(s) {', '.join(unknown)}; valid: {', '.join(METRICS)}")
    need_gt = [m for m in names if METRICS[m].needs_gt]
    if need_gt and not a.gt_dir:
        raise InputError(f"{', '.join(need_gt)} need --gt_dir (ground-truth EXR frames)")
    need_ldr = [m for m in names if METRICS[m].needs_ldr]
    if need_ldr and not a.ldr:
        raise InputError(f"{', '.join(need_ldr)} need --ldr (the 8-bit input of the predictions)")
    return names


def find_ldr(root: Path, names: list[str]) -> dict[str, Path]:
    """{sequence: its 8-bit input}: `root` itself for one sequence, else root/<name>[.ext]."""
    if len(names) == 1 and (root.is_file() or any(p.suffix.lower() in IMAGE_EXTS for p in root.glob("*"))):
        return {names[0]: root}
    found = {}
    for n in names:
        match = sorted(p for p in root.glob(f"{n}*") if p.stem == n)
        if not match:
            raise InputError(f"{root}: no input video or frame folder named {n}")
        found[n] = match[0]
    return found


def write_pngs(video: np.ndarray, out: Path) -> None:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(preview_frames(video)):
        with atomic_path(out / f"frame_{i:05d}.png") as tmp:
            Image.fromarray(f).save(tmp, format="PNG")


def score_sequence(name, pred, gt, names, a, out: Path, folders: tuple[Path, Path | None],
                   ldr: np.ndarray | None) -> tuple[dict, dict]:
    """(per-frame {metric: values}, per-sequence {metric: value})."""
    per_frame, per_seq = {}, {}
    if ldr is not None:
        if ldr.shape[:3] != pred.shape[:3]:
            raise InputError(f"{name}: the input is {len(ldr)} frames of {ldr.shape[2]}x{ldr.shape[1]}, "
                             f"the prediction {len(pred)} of {pred.shape[2]}x{pred.shape[1]}")
        stops = M.stops_per_frame(pred, gt * M.ldr_scale(gt, ldr) if a.align_exposure else gt, ldr)
        per_frame |= {m: stops[m] for m in names if m in stops}
    for m in names:
        if m == "log_psnr":
            per_frame[m] = M.log_psnr(pred, gt)
        elif m == "pu21_psnr":
            per_frame[m] = M.pu21_psnr(pred, gt, a.peak_nits)
        elif m == "pu21_piqe":
            per_frame[m] = M.pu21_piqe(pred, a.peak_nits)
        elif m in ("musiq", "clipiqa"):
            per_frame[m] = M.pyiqa_scores(m, pred, a.weights, a.device)
        elif m == "fovvideovdp":
            per_seq[m] = M.fovvideovdp(pred, gt, a.fps, a.peak_nits, a.device)
        elif m == "dover":
            per_seq[m] = M.dover(pred, a.weights)
        elif m == "fid":
            write_pngs(pred, out / "png" / "pred" / name)
            write_pngs(gt, out / "png" / "gt" / name)
            per_seq[m] = M.fid(out / "png" / "pred" / name, out / "png" / "gt" / name, a.weights, a.device)
        elif m == "hdrvdp3":
            per_seq[m] = M.hdrvdp3(folders[0], folders[1], a.hdrvdp3_path, a.peak_nits)
    for m, values in per_frame.items():  # frames without clipped pixels have no stops_clipped (NaN)
        per_seq[m] = float(np.mean(values[~np.isnan(values)])) if (~np.isnan(values)).any() else math.nan
    return per_frame, per_seq


def plot(per_frame: dict[str, dict[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({m for seq in per_frame.values() for m in seq})
    if not names:
        return
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 2.6 * len(names)), dpi=110, squeeze=False)
    for ax, m in zip(axes[:, 0], names):
        for seq, values in per_frame.items():
            if m in values:
                ax.plot(values[m], label=seq)
        better = "higher" if METRICS[m].higher_is_better else "lower"
        ax.set_ylabel(m)
        ax.set_title(f"{m} per frame ({better} is better)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("frame")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def evaluate(a) -> None:
    """Score (or with a.tonemap, tone-map) what evaluate.py's arguments `a` name."""
    out = Path(a.output)
    preds = find_sequences(Path(a.pred_dir))
    if a.tonemap:
        for name, folder in preds.items():
            write_pngs(load_frames(folder), out / name)
        log.info("wrote tone-mapped PNGs of %d sequence(s) to %s", len(preds), out)
        return
    names = choose_metrics(a)
    gts = find_sequences(Path(a.gt_dir)) if a.gt_dir else {}
    if gts and set(preds) != set(gts):
        if len(preds) == len(gts) == 1:  # two single folders: pair them whatever their names
            gts = {next(iter(preds)): next(iter(gts.values()))}
        else:
            raise InputError(f"{a.pred_dir} and {a.gt_dir} hold different sequences: "
                             f"{sorted(set(preds) ^ set(gts))[:5]}")
    ldrs = find_ldr(Path(a.ldr), list(preds)) if a.ldr else {}
    per_frame, per_seq = {}, {}
    for name, folder in preds.items():
        pred = load_frames(folder)
        gt = load_frames(gts[name]) if gts else None
        ldr = read_video(ldrs[name])[0] if ldrs else None
        if gt is not None and pred.shape != gt.shape:
            raise InputError(f"{folder} vs {gts[name]}: prediction is {pred.shape[0]} frames of "
                             f"{pred.shape[2]}x{pred.shape[1]}, ground truth {gt.shape[0]} of {gt.shape[2]}x{gt.shape[1]}")
        per_frame[name], per_seq[name] = score_sequence(name, pred, gt, names, a, out,
                                                        (folder, gts[name] if gts else None), ldr)
    mean = {m: float(np.nanmean([s[m] for s in per_seq.values() if m in s] or [math.nan])) for m in names}
    write_reports(out, names, per_frame, per_seq, mean, a)
    width = max(len(m) for m in names)
    print(f"{'metric'.ljust(width)}  mean over {len(per_seq)} sequence(s)")
    for m in names:
        print(f"{m.ljust(width)}  {mean[m]:.4f}  ({'higher' if METRICS[m].higher_is_better else 'lower'} is better)")


def write_reports(out: Path, names, per_frame, per_seq, mean, a) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {"pred_dir": a.pred_dir, "gt_dir": a.gt_dir, "peak_nits": a.peak_nits, "metrics": names,
               "mean": mean, "per_sequence": per_seq,
               # the release scores PIQE through pyiqa on float frames, pypiqe needs 8 bits: say which ran
               **({"pu21_piqe_backend": M.pu21_piqe_backend()} if "pu21_piqe" in names else {}),
               "per_frame": {s: {m: v.tolist() for m, v in d.items()} for s, d in per_frame.items()}}
    with atomic_path(out / "scores.json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2, allow_nan=True))
    frame_metrics = sorted({m for d in per_frame.values() for m in d})
    with atomic_path(out / "per_frame.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sequence", "frame", *frame_metrics])
        for s, d in per_frame.items():
            n = max((len(v) for v in d.values()), default=0)
            for i in range(n):
                w.writerow([s, i, *(f"{d[m][i]:.6g}" if m in d else "" for m in frame_metrics)])
    with atomic_path(out / "per_sequence.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sequence", *names])
        for s, d in per_seq.items():
            w.writerow([s, *(f"{d[m]:.6g}" if m in d and not math.isnan(d[m]) else "" for m in names)])
        w.writerow(["mean", *(f"{mean[m]:.6g}" for m in names)])
    plot(per_frame, out / "per_frame.png")
