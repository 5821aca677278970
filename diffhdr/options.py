"""The named choices the command-line tools offer, in a module free of torch, so that a tool can build
its parser from them and `--help` answers at once."""

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
