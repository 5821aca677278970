"""Score predicted HDR EXR frames: reference-based metrics against ground truth, no-reference alone.

    python evaluate.py --pred_dir output/exr/ --gt_dir groundtruth/exr/ --metrics all --benchmark sihdr
    python evaluate.py --pred_dir output/exr/ --metrics pu21_piqe
    python evaluate.py --tonemap --pred_dir output/exr/ --output pngs/     # EXR -> PNG (for FID, for looking)
    python evaluate.py --pred_dir output/exr/ --gt_dir gt/ --ldr input.mp4 --metrics stops_clipped,stops_elsewhere

--pred_dir holds EXR frames, or one folder per sequence (each with EXR frames or an exr/ folder);
--gt_dir mirrors it. --ldr is the 8-bit input the predictions were made from (a video or a folder of
frames; for several sequences, a folder holding one per sequence, named as the sequence): it adds
stops_clipped / stops_elsewhere, the mean |log2 L_pred - log2 L_gt| inside the pixels the input
clipped (every channel >= 250, allowing for the codec) and elsewhere. The ground truth must be at the
input's exposure (white = 1, as inference.py writes), or --align_exposure scales it there by the
median ratio over the input's well-exposed pixels. Writes <output>/scores.json, per_frame.csv,
per_sequence.csv and per_frame.png.
"""

from __future__ import annotations

import argparse

from diffhdr.cli import HelpFormatter, run
from diffhdr.options import BENCHMARKS, METRICS


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--pred_dir", required=True, help="predicted EXR frames, or one folder per sequence")
    p.add_argument("--gt_dir", help="ground-truth EXR frames, laid out as --pred_dir")
    p.add_argument("--ldr", help="the 8-bit input video(s) of the predictions: adds the stop errors")
    p.add_argument("--align_exposure", action="store_true",
                   help="scale the ground truth to the --ldr input's exposure before the stop errors")
    p.add_argument("--metrics", default="all", help=f"comma list of {', '.join(METRICS)}, or 'all'")
    p.add_argument("--benchmark", choices=sorted(BENCHMARKS), help="the paper's metric set for that table")
    p.add_argument("--peak_nits", type=float, default=1000.0, help="P99.9 luminance is scaled to this (cd/m^2)")
    p.add_argument("--fps", type=float, default=24.0, help="frame rate (FovVideoVDP)")
    p.add_argument("--weights", help="local weights file for fid / musiq / clipiqa / dover")
    p.add_argument("--hdrvdp3_path", help="folder of the hdrvdp-3 MATLAB sources")
    p.add_argument("--device", default="cpu", help="torch device of the learned metrics")
    p.add_argument("--output", default="evaluation", help="folder for scores.json, CSVs and the plot")
    p.add_argument("--tonemap", action="store_true", help="only write tone-mapped PNGs of --pred_dir to --output")
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    from diffhdr.evaluation import evaluate  # after parsing: --help answers without loading torch

    evaluate(a)


if __name__ == "__main__":
    run(main)
