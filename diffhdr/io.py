"""Reading and writing frames: OpenEXR, Radiance .hdr/.pic, LDR video and image folders, mp4.

Every write is atomic (temporary file in the same folder, then rename), so a crash never
leaves a half-written frame that a later run would take for a finished one.
Images are float32 numpy arrays (H, W, 3); videos are uint8 (T, H, W, 3).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from .color_mapping import (HDR_REFERENCE_WHITE_NITS, REC709_CHROMATICITIES, hdr10_light_levels, hdr10_yuv,
                            rec2020_nits)
from .errors import InputError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
HDR_EXTS = (".exr", ".hdr", ".pic")
HALF_MAX = 65504.0


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix + ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json(path: Path):
    """A JSON file's contents; a parse error is one line naming the file."""
    import json

    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


# --------------------------------------------------------------------------- OpenEXR

_CHANNEL_NAMES = {"r": 0, "red": 0, "g": 1, "green": 1, "b": 2, "blue": 2}


def _rgb_channel_names(names: list[str]) -> list[str] | None:
    """Pick R, G, B among channel names as Blender ("View Layer.Combined.R"), Nuke ("rgba.red")
    and plain writers ("R") name them. Prefer un-layered channels, then a 'Combined'/'rgba' layer."""
    candidates: dict[str, list[str | None]] = {}
    for name in names:
        layer, _, last = name.rpartition(".")
        idx = _CHANNEL_NAMES.get(last.lower())
        if idx is not None:
            candidates.setdefault(layer, [None, None, None])[idx] = name
    full = {layer: chans for layer, chans in candidates.items() if all(chans)}
    if not full:
        return None
    for pref in ("", "rgba", "Combined"):
        for layer, chans in full.items():
            if layer == pref or layer.endswith("." + pref) and pref:
                return chans  # type: ignore[return-value]
    return next(iter(full.values()))  # type: ignore[return-value]


def read_exr(path: str | Path) -> np.ndarray:
    """Read an OpenEXR file's RGB as float32 (H, W, 3). Half or float, any compression."""
    import OpenEXR

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        with OpenEXR.File(str(path), separate_channels=True) as f:
            channels = f.channels()
            names = _rgb_channel_names(list(channels))
            if names is None:
                if "Y" in channels:  # luminance-only EXR
                    y = channels["Y"].pixels.astype(np.float32)
                    return np.repeat(y[..., None], 3, axis=-1)
                raise InputError(f"{path}: no R/G/B channels (found {', '.join(sorted(channels))})")
            rgb = np.stack([channels[n].pixels for n in names], axis=-1)
    except InputError:
        raise
    except Exception as e:  # OpenEXR reports truncation and bad magic as bare runtime errors
        raise InputError(f"{path}: unreadable OpenEXR file ({e})") from None
    return rgb.astype(np.float32, copy=False)


def _exr_header(path: str | Path) -> dict:
    import OpenEXR

    try:
        with OpenEXR.File(str(path), header_only=True) as f:
            return dict(f.header())  # a copy: the file's own is emptied when it closes
    except Exception as e:
        raise InputError(f"{path}: unreadable OpenEXR header ({e})") from None


def exr_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an OpenEXR file from its header alone, after checking it has R/G/B (or Y) channels."""
    header = _exr_header(path)
    if "channels" not in header or "dataWindow" not in header:  # a truncated file can read as an empty header
        raise InputError(f"{path}: unreadable OpenEXR header (no channels or data window)")
    names = [c.name for c in header["channels"]]
    if _rgb_channel_names(names) is None and "Y" not in names:
        raise InputError(f"{path}: no R/G/B channels (found {', '.join(sorted(names))})")
    (x0, y0), (x1, y1) = header["dataWindow"]
    return int(y1 - y0 + 1), int(x1 - x0 + 1)


def exr_chromaticities(path: str | Path) -> tuple[float, ...] | None:
    """The `chromaticities` attribute of an EXR header (R, G, B, white xy), None where it has none."""
    value = _exr_header(path).get("chromaticities")
    return None if value is None else tuple(float(v) for v in value)


def write_exr(path: str | Path, rgb: np.ndarray, half: bool = True, chromaticities=REC709_CHROMATICITIES) -> None:
    """Write linear RGB (H, W, 3) as a ZIP-compressed EXR whose header names its primaries and white
    (`chromaticities`: Rec.709's unless given, diffhdr.colorspace.CHROMATICITIES)."""
    import OpenEXR

    if half:  # half float's largest finite value; a sun peak beyond it would become inf
        rgb = np.minimum(rgb, HALF_MAX)
    rgb = np.ascontiguousarray(rgb, dtype=np.float16 if half else np.float32)
    header = {
        "compression": OpenEXR.ZIP_COMPRESSION,
        "type": OpenEXR.scanlineimage,
        "chromaticities": tuple(float(v) for v in chromaticities),
    }
    channels = {c: np.ascontiguousarray(rgb[..., i]) for i, c in enumerate("RGB")}
    with atomic_path(path) as tmp:
        with OpenEXR.File(header, channels) as f:
            f.write(str(tmp))


# --------------------------------------------------------------------------- Radiance RGBE
# No maintained pure-Python reader exists (imageio needs FreeImage, a download), and the format
# is small: a text header, then RGBE scanlines, flat or in the "new" run-length encoding.


def read_hdr(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return _decode_rgbe(data)
    except (ValueError, IndexError) as e:
        raise InputError(f"{path}: not a valid Radiance HDR file ({e})") from None


def _decode_rgbe(data: bytes) -> np.ndarray:
    if not (data.startswith(b"#?RADIANCE") or data.startswith(b"#?RGBE")):
        raise ValueError("missing #?RADIANCE signature")
    pos = 0
    while True:  # header ends with an empty line
        end = data.index(b"\n", pos)
        line = data[pos:end]
        pos = end + 1
        if line.startswith(b"FORMAT=") and b"32-bit_rle_rgbe" not in line:
            raise ValueError(f"unsupported {line.decode(errors='replace')}")
        if not line.strip():
            break
    end = data.index(b"\n", pos)
    m = re.match(rb"-Y (\d+) \+X (\d+)", data[pos:end])
    if not m:
        raise ValueError("only '-Y H +X W' orientation is supported")
    h, w = int(m.group(1)), int(m.group(2))
    pos = end + 1
    buf = np.frombuffer(data, dtype=np.uint8, offset=pos)
    out = np.empty((h, w, 4), dtype=np.uint8)
    i = 0
    for y in range(h):
        # int(): numpy's uint8 would shift the high byte out (Poly Haven's 1024-wide files read as flat)
        if 8 <= w < 32768 and buf[i] == 2 and buf[i + 1] == 2 and (int(buf[i + 2]) << 8 | int(buf[i + 3])) == w:
            i += 4
            for c in range(4):
                x = 0
                while x < w:
                    n = int(buf[i])
                    i += 1
                    if n > 128:
                        n -= 128
                        out[y, x : x + n, c] = buf[i]
                        i += 1
                    else:
                        out[y, x : x + n, c] = buf[i : i + n]
                        i += n
                    x += n
        else:
            out[y] = buf[i : i + 4 * w].reshape(w, 4)
            i += 4 * w
    e = out[..., 3].astype(np.int32)
    scale = np.where(e > 0, np.ldexp(1.0, e - 136), 0.0).astype(np.float32)
    return out[..., :3].astype(np.float32) * scale[..., None]


def write_hdr(path: str | Path, rgb: np.ndarray) -> None:
    """Write flat (uncompressed) Radiance RGBE."""
    rgb = np.asarray(rgb, dtype=np.float32).clip(0)
    h, w, _ = rgb.shape
    mx = rgb.max(axis=-1)
    mant, exp = np.frexp(mx)
    scale = np.where(mx > 1e-32, mant * 256.0 / np.maximum(mx, 1e-32), 0.0)
    rgbe = np.zeros((h, w, 4), dtype=np.uint8)
    rgbe[..., :3] = np.clip(rgb * scale[..., None], 0, 255).astype(np.uint8)
    rgbe[..., 3] = np.where(mx > 1e-32, exp + 128, 0).astype(np.uint8)
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {h} +X {w}\n".encode()
    with atomic_path(path) as tmp:
        tmp.write_bytes(header + rgbe.tobytes())


def read_hdr_image(path: str | Path) -> np.ndarray:
    """Linear RGB (H, W, 3) float32 from .exr, .hdr or .pic."""
    ext = Path(path).suffix.lower()
    if ext == ".exr":
        return read_exr(path)
    if ext in (".hdr", ".pic"):
        return read_hdr(path)
    raise InputError(f"{path}: not an HDR image (expected {', '.join(HDR_EXTS)})")


# --------------------------------------------------------------------------- LDR video


def read_image(path: str | Path) -> np.ndarray:
    """An 8-bit image as uint8 (H, W, 3)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # a writable copy (torch.from_numpy warns on read-only)
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(f"{path}: cannot read image ({e.__class__.__name__}: {e})") from None


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """An LDR video file or a folder of PNG/JPEG frames -> (uint8 (T, H, W, 3), fps).

    Uses decord when it is installed, else PyAV.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise InputError(f"{path}: folder holds no PNG/JPEG frames")
        frames = [read_image(p) for p in files]
        odd = next((i for i, f in enumerate(frames) if f.shape != frames[0].shape), None)
        if odd is not None:
            (h, w), (oh, ow) = frames[0].shape[:2], frames[odd].shape[:2]
            raise InputError(f"{files[odd]}: {ow}x{oh}, the frames before it {w}x{h}")
        return np.stack(frames), 24.0
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        frames, fps = _read_video_decord(path)
    except ImportError:
        frames, fps = _read_video_av(path)
    if len(frames) == 0:
        raise InputError(f"{path}: video has no frames")
    return frames, fps


def _read_video_decord(path: Path) -> tuple[np.ndarray, float]:
    import decord  # optional, faster

    try:
        vr = decord.VideoReader(str(path))
        return vr.get_batch(list(range(len(vr)))).asnumpy(), float(vr.get_avg_fps())
    except decord.DECORDError as e:
        raise InputError(f"{path}: unreadable video ({e})") from None


def _read_video_av(path: Path) -> tuple[np.ndarray, float]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or 24)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except av.FFmpegError as e:
        raise InputError(f"{path}: unreadable video ({e})") from None
    return (np.stack(frames) if frames else np.zeros((0, 1, 1, 3), np.uint8)), fps


def write_video(path: str | Path, frames: np.ndarray, fps: float = 24.0, crf: int = 18) -> None:
    """uint8 (T, H, W, 3) -> H.264 mp4 (yuv420p; odd sizes padded by one pixel)."""
    import av

    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=round(fps))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for f in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
            container.mux(stream.encode())


# BT.2020 primaries and D65 in x265's units (0.00002), a 1000-nit mastering display.
_MASTER_DISPLAY = "G(8500,39850)B(6550,2300)R(35400,14600)WP(15635,16450)L(10000000,50)"


def hevc_10bit_available() -> bool:
    import av

    try:
        return "yuv420p10le" in {f.name for f in av.codec.Codec("libx265", "w").video_formats}
    except Exception:  # no libx265 in this FFmpeg build
        return False


def write_hdr10_video(path: str | Path, frames: np.ndarray, fps: float = 24.0, crf: int = 18,
                      white_nits: float = HDR_REFERENCE_WHITE_NITS) -> tuple[int, int]:
    """Linear Rec.709 (T, H, W, 3) -> HDR10 mp4: HEVC Main10, PQ, BT.2020, 4:2:0, with MaxCLL/MaxFALL
    and mastering-display metadata; linear 1.0 shows at `white_nits`. Returns (MaxCLL, MaxFALL)."""
    import av

    t, h, w, _ = frames.shape
    # even sizes for 4:2:0; at least 64 px: libx265 (PyAV 18's FFmpeg) corrupts memory on some narrower frames
    ph, pw = max(h + h % 2, 64) - h, max(w + w % 2, 64) - w
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    nits = rec2020_nits(frames, white_nits)  # once: the light levels and every frame's planes use it
    cll, fall = hdr10_light_levels(nits)
    params = (f"colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:range=limited:hdr10=1:repeat-headers=1:"
              f"max-cll={cll},{fall}:master-display={_MASTER_DISPLAY}:log-level=error")
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx265", rate=round(fps))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p10le"
            stream.options = {"crf": str(crf), "x265-params": params, "tag": "hvc1"}
            for f in nits:
                planes = np.concatenate([p.ravel() for p in hdr10_yuv(f)])
                frame = av.VideoFrame.from_ndarray(planes.reshape(-1, frames.shape[2]), format="yuv420p10le")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    return cll, fall
