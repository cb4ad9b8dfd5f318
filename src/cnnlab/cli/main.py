"""The `cnnlab` command line: one sub-command per api function. Each command module declares its
parsers (the config flags are generated from the schema, cli/flags.py) and a handler that parses,
calls one api function and prints the result; this module assembles them and runs one."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from cnnlab import __version__
from cnnlab.cli import argtypes
from cnnlab.cli.commands import deploy, runs, tools, training, tuning
from cnnlab.core.errors import CnnlabError

__all__ = ["Terminated", "build_parser", "handlers", "main"]

GROUPS = (training, tuning, runs, deploy, tools)  # in the order `cnnlab --help` lists their commands


def build_parser() -> argparse.ArgumentParser:
    """The `cnnlab` parser: one sub-command per public function."""
    p = argtypes.Parser(prog="cnnlab", description="Train, compare and understand image classifiers.")
    p.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=argtypes.Parser)
    for group in GROUPS:
        group.register(sub)
    return p


def handlers(parser: argparse.ArgumentParser | None = None) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Every command (``data inspect`` for nested ones) → its handler, read off the parser."""
    out: dict[str, Callable[[argparse.Namespace], int]] = {}

    def walk(p: argparse.ArgumentParser, prefix: str) -> None:
        if p.get_default("handler"):
            out[prefix.strip()] = p.get_default("handler")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{prefix} {name}")

    walk(parser or build_parser(), "")
    return out


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (so redirection and test capture work)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup_logging(quiet: bool) -> None:
    logger = logging.getLogger("cnnlab")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    rank = int(os.environ.get("RANK", "0"))  # under torchrun, rank 0 speaks for all
    logger.setLevel(logging.WARNING if quiet or rank > 0 else logging.INFO)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the run is marked interrupted and can be resumed."""


def on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cnnlab` console script; returns the exit code."""
    started = time.time()  # a study's budget counts from here
    args = build_parser().parse_args(argv)
    args.started = started
    setup_logging(getattr(args, "quiet", False))
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if main_thread else None
    try:
        return int(args.handler(args))
    except CnnlabError as e:
        print(f"cnnlab: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `cnnlab list models | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Terminated:
        print("cnnlab: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
