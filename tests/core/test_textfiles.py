"""The one bounded reader of a text file a user names (issue 45): a FIFO, a device, a folder, a file
over its cap, non-UTF-8 bytes and NUL bytes are each one line, and nothing blocks."""

from __future__ import annotations

import os
import threading

import pytest

from cnnlab.core.errors import CnnlabError
from cnnlab.core.textfiles import read_text_file


def test_a_text_file_is_read_whole_without_its_byte_order_mark(tmp_path):
    (tmp_path / "a.csv").write_bytes("\ufeffpath,label\nx.png,cat\n".encode())
    assert read_text_file(tmp_path / "a.csv", "label file") == "path,label\nx.png,cat\n"


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: os.mkfifo(p), "is not a regular file (a FIFO, socket or device)"),
        (lambda p: p.mkdir(), "is a folder, not a file"),
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b"x" * 2001), "is over 2,000 bytes"),
        (lambda p: p.write_bytes(b"path\n\xff\xfe\n"), "is not UTF-8 text (byte 5)"),
        (lambda p: p.write_bytes(b"path\x00label\n"), "is not text (it holds NUL bytes)"),
    ],
)
def test_what_is_not_a_small_text_file_is_one_line_and_never_blocks(tmp_path, make, message):
    target = tmp_path / "x.csv"
    make(target)
    errors: list[str] = []

    def read() -> None:
        try:
            read_text_file(target, "data.exclude", limit=2000)
        except CnnlabError as e:
            errors.append(str(e))

    reader = threading.Thread(target=read, daemon=True)  # a FIFO opened for reading would wait for a writer
    reader.start()
    reader.join(5)
    assert not reader.is_alive(), "the reader blocked"
    assert errors and errors[0].startswith(f"data.exclude {str(target)!r}") and message in errors[0], errors
