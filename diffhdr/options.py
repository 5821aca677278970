"""The named choices the command-line tools offer, in a module free of torch, so that a tool can build
its parser from them and `--help` answers at once."""

from dataclasses import dataclass

SPEED_MODES = ("naive", "default", "fast")
MEMORY_MODES = ("auto", "full", "low", "offload")
CP_KINDS = ("ulysses", "ring")  # context parallelism

# Inference presets, applied before a model's own defaults and the flags.
PRESETS = {
    "spec": {},
    # The authors' release (reference-facts section 6): no CFG, flow-match Euler with shift 5,
    # windows of 33 with stride 16, seed 10, CFA off (its alphas default to 0).
    "reference": dict(guidance_scale=1.0, scheduler="euler", shift=5.0, window_overlap=17, seed=10, cfa=False,
                      blend="linear", prompt_verbatim=True, release_windows=True, long_video_seed=34),
}
OUTPUT_COLORSPACES = ("rec709", "acescg", "aces2065-1")  # inference's EXR output (diffhdr.colorspace)
BASELINE_METHODS = ("linear", "akyuz")  # scripts/baselines.py (diffhdr.baselines.BASELINES)


@dataclass(frozen=True)
class MetricInfo:
    needs_gt: bool
    per_frame: bool
    higher_is_better: bool
    offline: str  # what it needs offline
    needs_ldr: bool = False  # the 8-bit input the prediction was made from (evaluate.py --ldr)


METRICS = {
    "log_psnr": MetricInfo(True, True, True, "nothing"),
    "pu21_psnr": MetricInfo(True, True, True, "nothing"),
    "fovvideovdp": MetricInfo(True, False, True, "pyfvvdp (ships its calibration)"),
    "pu21_piqe": MetricInfo(False, True, False, "pyiqa (as the release) or pypiqe (no weights)"),
    "hdrvdp3": MetricInfo(True, False, True, "MATLAB or Octave + hdrvdp-3 sources (--hdrvdp3_path)"),
    "fid": MetricInfo(True, False, False, "pytorch-fid + Inception weights file (--weights)"),
    "musiq": MetricInfo(False, True, True, "pyiqa + torchvision + MUSIQ weights in $TORCH_HOME/hub/pyiqa"),
    "clipiqa": MetricInfo(False, True, True, "pyiqa + torchvision + CLIP weights in $TORCH_HOME/hub/pyiqa"),
    "dover": MetricInfo(False, False, True, "the authors' DOVER code + DOVER.pth (no PyPI package)"),
    "stops_clipped": MetricInfo(True, True, False, "nothing", needs_ldr=True),
    "stops_elsewhere": MetricInfo(True, True, False, "nothing", needs_ldr=True),
}
BENCHMARKS = {"sihdr": ["hdrvdp3", "pu21_piqe", "fid"], "cinematic": ["fovvideovdp", "dover", "musiq", "clipiqa"]}
