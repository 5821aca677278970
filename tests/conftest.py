import logging

import pytest
import torch

from diffhdr.config import config_from_dict, load_config
from diffhdr.synthetic import write_dataset

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory):
    """Three 21-frame procedural sequences, 64x96, as real EXR files."""
    return write_dataset(tmp_path_factory.mktemp("data"), sequences=3, frames=21, h=64, w=96)


@pytest.fixture
def tiny_cfg(dataset_root, tmp_path):
    cfg = load_config("configs/tiny.yaml")
    cfg.data.dataset_root = str(dataset_root)
    cfg.output_dir = str(tmp_path / "ckpt")
    return cfg


@pytest.fixture(autouse=True)
def _quiet_logs(caplog):
    caplog.set_level(logging.INFO)


def cfg_with(**sections):
    return config_from_dict(sections)
