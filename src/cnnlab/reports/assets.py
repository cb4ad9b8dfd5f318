"""The static pages that other commands serve as they are: the board's single-page app and the
service's upload page. They live with every other page, under reports/templates; this module only
reads them (no template engine, so `cnnlab serve MODEL.onnx` stays light)."""

from __future__ import annotations

from importlib import resources

__all__ = ["static_page"]

PAGES = ("board.html", "serve.html")


def static_page(name: str) -> str:
    """The text of one of :data:`PAGES`."""
    if name not in PAGES:
        raise ValueError(f"no static page {name!r}; there are {', '.join(PAGES)}")
    return resources.files("cnnlab.reports").joinpath("templates", name).read_text(encoding="utf-8")
