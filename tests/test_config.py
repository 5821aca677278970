import pytest

from diffhdr.config import ConfigError, load_config


@pytest.mark.parametrize("name", ["train", "tiny", "reference"])
def test_shipped_configs_load(name):
    cfg = load_config(f"configs/{name}.yaml")
    assert cfg.color_mapping.gamma == 2.2


def test_paper_values():
    cfg = load_config("configs/train.yaml")
    assert cfg.training.resolution == [33, 720, 1280] and cfg.color_mapping.M == 1000.0
    assert cfg.training.gradient_accumulation == 4 and cfg.training.learning_rate == 1e-4
    assert load_config("configs/reference.yaml").color_mapping.M == 65536.0


def test_typos_and_bad_values_are_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("training:\n  num_step: 5\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key\(s\) training.num_step"):
        load_config(p)
    p.write_text("training:\n  resolution: [32, 64, 64]\n")
    with pytest.raises(ConfigError, match="must be 4k\\+1"):
        load_config(p)
    p.write_text("training:\n  resolution: [720, 1280]\n")
    with pytest.raises(ConfigError, match=r"training.resolution must be \[T, H, W\]"):
        load_config(p)
    p.write_text("color_mapping:\n  M: big\n")
    with pytest.raises(ConfigError, match="color_mapping.M must be a number"):
        load_config(p)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.yaml")
