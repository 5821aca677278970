"""What every command-line script shares: the spec's log format, help that shows defaults, one-line errors."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import traceback
from collections.abc import Callable

from .config import ConfigError
from .errors import InputError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"  # 12:34:56 INFO diffhdr.train step=...


def setup_logging(level: int = logging.INFO) -> None:
    """The spec's format, from the main process: other ranks of a torchrun / accelerate launch
    print warnings and errors only, so every line appears once."""
    if int(os.environ.get("RANK", "0")) != 0:
        level = max(level, logging.WARNING)
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    for noisy in ("httpx", "urllib3", "diffusers", "transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # transformers' "Loading weights" / "Writing model shards" bars landed inside our own output; it reads
    # this on import (diffusers does not: DiffHDRModel.from_pretrained turns its bars off)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The script's docstring as written, and each option's default after its help, where it has one
    to show (not None, not a switch's False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" in text or not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a script's main; bad input ends in one line on stderr and exit status 2, no traceback."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    setup_logging()
    try:
        with logging_redirect_tqdm():  # log lines print above progress bars, not inside them
            code = main(argv)
    except (InputError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except Exception:  # a bug, not bad input: the whole trace
        traceback.print_exc()
        code = 1
    # Out here the exception and main()'s frames are gone, so a DataLoader's workers shut down now,
    # by their queue. Left to the exit handlers, they would be stopped by SIGTERM, which they ignore
    # (dataset.ignore_sigterm): the process never ended.
    gc.collect()
    sys.exit(code or 0)
