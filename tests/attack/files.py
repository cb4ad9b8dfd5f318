"""Hostile files, built small and in bounded memory: decompression bombs in several containers,
memory-multiplying PNGs, formats cnnlab does not decode. The PNG writer streams rows through zlib,
so a 20000² image costs this process a few hundred KB."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(side: int, bit_depth: int = 8, colour: int = 0, extra: bytes = b"", value: int = 0) -> bytes:
    """A valid PNG of side² pixels of one value; ``colour`` 0 grey, 2 RGB, 3 palette (``extra``
    holds the PLTE/tRNS chunks). 16-bit grey rows are two bytes a pixel."""
    per_pixel = {0: 1, 2: 3, 3: 1}[colour] * (2 if bit_depth == 16 else 1)
    z = zlib.compressobj(9)
    row = b"\x00" + bytes([value]) * (side * per_pixel)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, bit_depth, colour, 0, 0, 0))
        + extra
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def png_bomb(side: int = 20_000) -> bytes:
    """side² black pixels in a few hundred KB: refused from its header."""
    return png(side)


def png16(side: int = 3999) -> bytes:
    """A 16-bit greyscale PNG inside a 16 M pixel budget (tens of KB): decodes to 2 bytes a pixel."""
    return png(side, bit_depth=16, value=7)


def palette_png(side: int = 3999, transparent: bool = True) -> bytes:
    """A palette PNG with a transparent entry: the composite goes through RGBA (4 bytes a pixel)."""
    plte = _chunk(b"PLTE", bytes([0, 0, 0, 255, 0, 0, 0, 255, 0]))
    trns = _chunk(b"tRNS", bytes([0])) if transparent else b""
    return png(side, colour=3, extra=plte + trns, value=1)


def ico_bomb(side: int = 20_000) -> bytes:
    """A Windows icon whose one entry is a side² PNG: Pillow decodes the PNG while opening an ICO."""
    inner = png(side)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(inner), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + inner


def eps() -> bytes:
    """An Encapsulated PostScript file (Pillow hands these to Ghostscript)."""
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"


def psd() -> bytes:
    """The start of a Photoshop file."""
    return b"8BPS" + struct.pack(">HxxxxxxHIIHH", 1, 3, 64, 64, 8, 3) + bytes(64)


def fits() -> bytes:
    """A FITS header block."""
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                    8",
        "NAXIS   =                    0",
        "END",
    ]
    return "".join(c.ljust(80) for c in cards).ljust(2880).encode()


def pickle_payload() -> bytes:
    """A pickle that calls a function when loaded (harmless here: os.getcwd); a checkpoint loader
    with weights_only refuses it."""
    import os
    import pickle

    class Call:
        def __reduce__(self):
            return (os.getcwd, ())

    return pickle.dumps({"model": Call()})


def tar_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    """A regular tar member ``name`` holding ``data``."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def rewrite_tar(tar_path: Path, change: Callable[[tarfile.TarInfo, bytes | None], list]) -> None:
    """Rebuild a tar member by member: each (member, data) becomes ``change``'s list of
    (TarInfo, bytes or None) — itself, others, or nothing."""
    members = []
    with tarfile.open(tar_path) as t:
        for m in t:
            members.append((m, t.extractfile(m).read() if m.isreg() else None))  # type: ignore[union-attr]
    with tarfile.open(tar_path, "w") as t:
        for m, data in members:
            for info, payload in change(m, data):
                t.addfile(info, io.BytesIO(payload) if payload is not None else None)


def with_onnx_meta(src: Path, dst: Path, change: Callable[[dict], object]) -> Path:
    """A copy of the .onnx file ``src`` at ``dst`` whose cnnlab metadata ``change`` edited in place
    (or replaced: a returned string is written as the metadata text)."""
    import json

    import onnx

    proto = onnx.load(str(src))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["cnnlab"])
    text = change(meta)
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {"cnnlab": text if isinstance(text, str) else json.dumps(meta)})
    onnx.save_model(proto, str(dst))
    return dst
