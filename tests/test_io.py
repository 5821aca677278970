import numpy as np
import pytest

from diffhdr.errors import InputError
from diffhdr.io import read_exr, read_hdr, read_hdr_image, read_video, write_exr, write_hdr, write_video


def test_half_exr_round_trip_bit_exact(tmp_path):
    rgb = (np.random.default_rng(0).lognormal(0, 3, (17, 23, 3))).astype(np.float16)
    write_exr(tmp_path / "a.exr", rgb, half=True)
    back = read_exr(tmp_path / "a.exr")
    assert back.dtype == np.float32
    assert np.array_equal(back.astype(np.float16).view(np.uint16), rgb.view(np.uint16))


def test_float_exr_round_trip_and_chromaticities(tmp_path):
    import OpenEXR

    rgb = np.random.default_rng(1).uniform(0, 5000, (8, 9, 3)).astype(np.float32)
    write_exr(tmp_path / "f.exr", rgb, half=False)
    assert np.array_equal(read_exr(tmp_path / "f.exr"), rgb)
    with OpenEXR.File(str(tmp_path / "f.exr")) as f:
        chroma = f.header()["chromaticities"]
    assert np.allclose(np.ravel(chroma), [0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290], atol=1e-6)


@pytest.mark.parametrize(
    "names",
    [("R", "G", "B", "A"), ("View Layer.Combined.R", "View Layer.Combined.G", "View Layer.Combined.B",
                            "View Layer.Combined.A"), ("rgba.red", "rgba.green", "rgba.blue", "rgba.alpha")],
)
def test_exr_written_by_openimageio_reads_back(tmp_path, names):
    oiio = pytest.importorskip("OpenImageIO")
    rgba = np.random.default_rng(2).uniform(0, 100, (6, 7, 4)).astype(np.float16)
    spec = oiio.ImageSpec(7, 6, 4, "half")
    spec.channelnames = names
    out = oiio.ImageOutput.create(str(tmp_path / "o.exr"))
    out.open(str(tmp_path / "o.exr"), spec)
    out.write_image(rgba)
    out.close()
    assert np.array_equal(read_exr(tmp_path / "o.exr"), rgba[..., :3].astype(np.float32))


def test_truncated_and_missing_exr_are_one_line_errors(tmp_path):
    write_exr(tmp_path / "a.exr", np.ones((32, 32, 3), np.float32))
    data = (tmp_path / "a.exr").read_bytes()
    (tmp_path / "t.exr").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="t.exr: unreadable OpenEXR"):
        read_exr(tmp_path / "t.exr")
    with pytest.raises(InputError, match="nope.exr: file not found"):
        read_exr(tmp_path / "nope.exr")


def test_radiance_hdr_round_trip_and_rle(tmp_path):
    rgb = np.random.default_rng(3).uniform(0.01, 1000, (9, 40, 3)).astype(np.float32)
    write_hdr(tmp_path / "a.hdr", rgb)
    back = read_hdr_image(tmp_path / "a.hdr")
    # RGBE shares one exponent per pixel: 8 bits of mantissa relative to the pixel's largest channel
    assert np.all(np.abs(back - rgb) <= rgb.max(-1, keepdims=True) / 128)
    # new-style run-length encoded scanline, written by hand: a run of 40 identical pixels
    w = 40
    line = bytes([2, 2, 0, w]) + b"".join(bytes([128 + w, v]) for v in (128, 64, 32, 129))
    (tmp_path / "rle.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 1 +X 40\n" + line)
    px = read_hdr(tmp_path / "rle.hdr")
    assert px.shape == (1, 40, 3) and np.allclose(px[0, 0], [1.0, 0.5, 0.25])


def test_video_round_trip_and_frame_folder(tmp_path):
    frames = np.zeros((5, 32, 48, 3), np.uint8)
    frames[:, :, :24] = 200
    write_video(tmp_path / "v.mp4", frames, fps=24)
    back, fps = read_video(tmp_path / "v.mp4")
    assert back.shape == frames.shape and fps == 24
    assert np.abs(back.astype(int) - frames).mean() < 3
    from PIL import Image

    (tmp_path / "frames").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "frames" / f"{i:03d}.png")
    back, _ = read_video(tmp_path / "frames")
    assert np.array_equal(back, frames)


def test_unreadable_video_error(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(InputError, match="bad.mp4"):
        read_video(tmp_path / "bad.mp4")


def test_hdr10_preview_is_pq_bt2020_10bit_and_decodes_to_the_right_nits(tmp_path):
    import av

    from diffhdr.color_mapping import pq_decode
    from diffhdr.io import hevc_10bit_available, write_hdr10_video

    if not hevc_10bit_available():
        pytest.skip("this FFmpeg build has no libx265")
    levels = np.array([0.1, 1.0, 10.0])  # linear grey: 20.3, 203 and 2030 cd/m2
    frames = np.repeat(np.repeat(levels, 32)[None, :, None, None], 3, axis=3) * np.ones((4, 96, 80, 3))
    cll, fall = write_hdr10_video(tmp_path / "p.mp4", frames.astype(np.float32), fps=24)
    assert cll == 2030 and fall == np.ceil(levels.mean() * 203)
    with av.open(str(tmp_path / "p.mp4")) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.name, cc.width, cc.height) == ("hevc", 80, 96)
        assert (cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range) == (9, 16, 9, 1)  # BT.2020, PQ, NCL, limited
        frame = next(c.decode(video=0))
        assert frame.format.name == "yuv420p10le"
        y = frame.to_ndarray()[:96].astype(float)
    nits = pq_decode((y[[16, 48, 80], 40] - 64) / 876)
    assert np.allclose(nits, levels * 203, rtol=0.03), nits
