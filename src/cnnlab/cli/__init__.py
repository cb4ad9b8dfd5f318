"""The `cnnlab` command line: parses flags into a typed config and calls one api function."""

from cnnlab.cli.main import main

__all__ = ["main"]
