"""Every command-line tool: each option says what it is for and shows its default; --help answers without
loading torch; a crash ends the process."""

import argparse
import importlib.util
import inspect
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT
from diffhdr.cli import HelpFormatter

TOOLS = ["train.py", "inference.py", "evaluate.py", *sorted(p.relative_to(ROOT).as_posix()
                                                          for p in (ROOT / "scripts").glob("*.py"))]


class Parsed(Exception):
    """Carries the parser out of a tool's main at the moment it would parse."""


@pytest.mark.parametrize("tool", TOOLS)
def test_every_option_has_help_and_shows_its_default(tool, monkeypatch):
    spec = importlib.util.spec_from_file_location(f"tool_{tool.replace('/', '_')[:-3]}", ROOT / tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def grab(self, args=None, namespace=None):
        raise Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    entry = getattr(module, "parse_args", None) or module.main
    if not any(p.default is inspect.Parameter.empty for p in inspect.signature(entry).parameters.values()):
        call = entry
    else:
        call = lambda: entry([])  # noqa: E731
    try:
        call()
    except Parsed as p:
        parser = p.args[0]
    else:
        pytest.skip(f"{tool} takes no options")
    assert parser.formatter_class is HelpFormatter
    assert [a.option_strings for a in parser._actions if not a.help] == []
    shown = [a for a in parser._actions if a.option_strings and a.default not in (None, False, argparse.SUPPRESS)]
    assert " ".join(parser.format_help().split()).count("(default: ") >= len(shown)


CRASH_WITH_WORKERS = textwrap.dedent("""
    import torch
    from diffhdr.cli import run
    from diffhdr.dataset import ignore_sigterm

    def main(argv):
        data = torch.utils.data.TensorDataset(torch.zeros(8, 2))
        batches = iter(torch.utils.data.DataLoader(data, num_workers=1, worker_init_fn=ignore_sigterm))
        next(batches)
        raise RuntimeError("a bug mid-run")

    run(main)
""")


def test_a_crash_with_loader_workers_alive_exits_with_its_trace():
    # The workers ignore SIGTERM (they must outlive a SLURM signal to the group); the exit handlers'
    # SIGTERM then never stopped them, and a crashed run hung forever instead of ending.
    p = subprocess.run([sys.executable, "-c", CRASH_WITH_WORKERS], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert "RuntimeError: a bug mid-run" in p.stderr and "Traceback" in p.stderr


LIGHT_HELP = ["train.py", "inference.py", "evaluate.py", "scripts/baselines.py", "scripts/export_lora.py", "scripts/precompute_hdr_latents.py",
              "scripts/eval_mini.py", "scripts/make_hdri_dataset.py", "scripts/demo.py", "scripts/generate_captions.py",
              "scripts/plot_mini.py"]
PROBE = """
import runpy, sys
sys.argv = [sys.argv[1], "--help"]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print("loaded:", sorted(m for m in ("torch", "diffusers", "transformers", "accelerate") if m in sys.modules))
"""


@pytest.mark.parametrize("tool", LIGHT_HELP)
def test_help_answers_without_loading_torch(tool):
    # torch alone takes 2-5 s to import: --help took 4-6 s before the heavy imports moved after parsing
    p = subprocess.run([sys.executable, "-c", PROBE, tool], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "usage:" in p.stdout, p.stderr
    assert p.stdout.strip().endswith("loaded: []")
