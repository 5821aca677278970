import pytest

from conftest import run_script
from diffhdr.prompting import parse_caption, repair_caption
from diffhdr.synthetic import write_dataset


def test_repair_turns_free_text_into_the_caption_format():
    assert repair_caption("[overexposed: the sky]; [UNDEREXPOSED: the cave]") == \
        "[Overexposed: the sky]; [Underexposed: the cave]"
    assert repair_caption("Over-exposed areas: the sky and sun.\nUnder-exposed: trees") == \
        "[Overexposed: the sky and sun]; [Underexposed: trees]"
    assert repair_caption("A beach at noon.") == "[Overexposed: A beach at noon]; [Underexposed: none]"
    assert repair_caption("") == "[Overexposed: none]; [Underexposed: none]"
    assert parse_caption(repair_caption("x#$%@!")) is not None


@pytest.fixture(scope="module")
def captioner(tmp_path_factory):
    pytest.importorskip("torchvision", reason="the Qwen3-VL processor imports torchvision")
    from diffhdr.tiny import write_tiny_captioner

    return write_tiny_captioner(tmp_path_factory.mktemp("qwen") / "tiny-qwen3-vl")


def test_generate_captions_end_to_end(tmp_path, captioner):
    root = write_dataset(tmp_path / "d", sequences=3, frames=9, h=32, w=48)
    (root / "sequence_000" / "caption.txt").unlink()
    (root / "sequence_001" / "caption.txt").unlink()
    kept = (root / "sequence_002" / "caption.txt").read_text()
    args = ["scripts/generate_captions.py", "--dataset_root", root, "--model", captioner, "--device", "cpu",
            "--frame_stride", 4, "--max_new_tokens", 8]
    run_script(*args)
    for s in ("sequence_000", "sequence_001"):
        text = (root / s / "caption.txt").read_text().strip()
        assert parse_caption(text) is not None, text  # nonsense words, but in the caption format
    assert (root / "sequence_002" / "caption.txt").read_text() == kept  # skipped: it had one
    run_script(*args, "--overwrite")
    assert parse_caption((root / "sequence_002" / "caption.txt").read_text()) is not None
    assert (root / "sequence_002" / "caption.txt").read_text() != kept
    caption = (root / "sequence_000" / "caption.txt").read_text()
    run_script(*args, "--scene")  # captions exist: only the scene files are written
    assert (root / "sequence_000" / "caption.txt").read_text() == caption
    assert all(len((root / f"sequence_00{i}" / "scene.txt").read_text().strip().splitlines()) == 1 for i in range(3))
