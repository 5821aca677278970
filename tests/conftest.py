import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from diffhdr.config import load_config
from diffhdr.synthetic import write_dataset

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def tiny_model_dir(tmp_path_factory):
    """One tiny model per test session, shared with the scripts the tests start."""
    path = tmp_path_factory.mktemp("tiny") / "tiny-wan-vace"
    os.environ["DIFFHDR_TINY_DIR"] = str(path)
    from diffhdr.tiny import write_tiny_model

    return write_tiny_model(path)


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory):
    """Three 21-frame procedural sequences, 64x96, as real EXR files."""
    return write_dataset(tmp_path_factory.mktemp("data"), sequences=3, frames=21, h=64, w=96)


@pytest.fixture
def tiny_cfg(dataset_root, tmp_path):
    cfg = load_config(ROOT / "configs/tiny.yaml")
    cfg.data.dataset_root = str(dataset_root)
    cfg.output_dir = str(tmp_path / "ckpt")
    return cfg


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.INFO)


def write_config(path: Path, **overrides) -> Path:
    """configs/tiny.yaml with sections updated from `overrides` (e.g. training={...})."""
    raw = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
    for key, value in overrides.items():
        if isinstance(value, dict):
            raw.setdefault(key, {}).update(value)
        else:
            raw[key] = value
    path.write_text(yaml.safe_dump(raw))
    return path


def run_script(*args, check=True, timeout=300, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc
