"""Argument types of the command line (one-line errors naming what was expected) and the parser
class every command uses."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from cnnlab.core.names import TTA_VIEWS
from cnnlab.core.registry import did_you_mean
from cnnlab.core.schema import TrainConfig

__all__ = [
    "Parser",
    "all_flags",
    "auto_or_int",
    "device",
    "float_list",
    "int_list",
    "int_pair",
    "name_list",
    "port",
    "positive_float",
    "positive_int",
]


def name_list(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected one or more names separated by commas")
    return names


def int_list(text: str) -> list[int]:
    try:  # negatives are kept, so the config check names them instead of a silent sign change
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers like 512,256, got {text!r}") from None


def int_pair(text: str) -> list[int] | str:
    if text.strip() == "auto":
        return "auto"
    try:
        parts = int_list(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected two epoch counts E1,E2 like 3,2, or auto, got {text!r}") from None
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"expected two epoch counts E1,E2 like 3,2, or auto, got {text!r}")
    return parts


def float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.replace("/", ",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected fractions like 0.8,0.1,0.1, got {text!r}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text!r}")
    return value


def port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {text!r}")
    return port


def device(text: str) -> str:

    try:
        TrainConfig._known_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e}, got {text!r}") from None
    return text


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (usage is one `--help` away) and no abbreviated flags
    (``--epoch 3`` is a typo, not ``--epochs 3``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: "):
            flags = all_flags(self)
            first = message.removeprefix("unrecognized arguments: ").split()[0].split("=")[0]
            if first in flags:  # all_flags spans every command: this one is another command's
                message += f"; {first} belongs to other commands, not this one"
            else:
                message += did_you_mean(first, flags)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def all_flags(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string of ``parser`` and of its sub-commands."""
    flags: list[str] = []
    for action in parser._actions:
        flags += action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags += all_flags(sub)
    return flags


def auto_or_int(text: str) -> str | int:
    """``auto`` or a whole number (``train.threads``, ``train.batch_size``): the schema checks the range."""
    if text.strip() == "auto":
        return text
    try:
        int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a whole number, got {text!r}") from None
    return positive_int(text)


def add_tta_flag(parser: argparse.ArgumentParser, what: str = "") -> None:
    """``--tta`` (evaluate, predict, serve): test-time augmentation of a run folder's model."""
    parser.add_argument(
        "--tta",
        choices=TTA_VIEWS,
        default="none",
        help="test-time augmentation for a run folder: logits averaged over the image, its mirror image "
        "and, with crops, four shifted crops" + what,
    )
