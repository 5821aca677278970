"""Peak GPU memory and time of the float32 Wan VAE at 33x720x1280 (random weights, real shapes):
the VACE context encode (inactive + reactive, one batch of 2) and the output decode, with and
without tiling. These run outside the denoising loop, so they set the floor of any memory mode.

    python bench/bench_vae.py [--tiny]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from diffhdr.model import DiffHDRModel  # noqa: E402
from diffhdr.tiny import REAL_VAE, TINY_VAE  # noqa: E402


def main():
    p = common.arguments(__doc__)
    a = p.parse_args()
    from diffusers import AutoencoderKLWan

    device = common.device_of(a)
    cfg, (t, h, w) = (TINY_VAE, (9, 32, 32)) if a.tiny else (REAL_VAE, (33, 720, 1280))
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**cfg).to(device)
    model = DiffHDRModel(None, vae, None, None)
    g = torch.Generator().manual_seed(0)
    control = (torch.rand(1, 3, t, h, w, generator=g) * 2 - 1).to(device)
    mask = (torch.rand(1, t, h, w, generator=g) > 0.8).float().to(device)
    rows = []
    for tiled in (False, True):
        if tiled:
            vae.enable_tiling()
        times = []
        common.free(device)
        common.reset_peak(device)
        with common.timed(device, times):
            context = model.vace_context(control, mask)
        enc_peak = common.peak_gib(device)
        common.reset_peak(device)
        with common.timed(device, times):
            video = model.decode_latents(context[:, :16])
        rows.append({"tiling": tiled, "context_encode_s": times[0], "context_encode_peak_GiB": enc_peak,
                     "decode_s": times[1], "decode_peak_GiB": common.peak_gib(device)})
        print(common.table([rows[-1]], list(rows[-1])), flush=True)
        del context, video
    payload = {"benchmark": "vae_fp32", "environment": common.environment(device),
               "config": {"frames": t, "height": h, "width": w, "vae": cfg, "tiny": a.tiny}, "results": rows}
    print("wrote", common.write_json("vae_tiny" if a.tiny else "vae", payload, a.out))


if __name__ == "__main__":
    main()
