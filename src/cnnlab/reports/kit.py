"""The HTML kit every page of cnnlab is made with: one page template rendered by Jinja2 with
autoescaping, and the pieces a section is built from (paragraphs, tables, images, thumbnails, tiles)
as ``markupsafe.Markup``. A value reaches a page only through a template or ``Markup.format``, both
of which escape it; a plain string joined onto markup is escaped too. So a class name, a run name or
a config string cannot become an element (tests/reports/test_escaping.py plants such values in
every page)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from PIL import Image

__all__ = ["CSS", "Markup", "Section", "img_tag", "join", "kpis", "page", "pre", "table", "thumbnails"]

CSS = Markup("""
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85;font-size:14px}
main{padding:16px 32px;max-width:1200px}section{background:#fff;border-radius:8px;padding:12px 20px;margin:14px 0;
overflow-x:auto;
box-shadow:0 1px 3px rgba(0,0,0,.08)}h2{font-size:17px;margin:6px 0 10px;color:#1d3557}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border-bottom:1px solid #e3e6ea;padding:4px 10px;
text-align:right}th{background:#eef1f5}td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;margin:4px 0}.grid{display:flex;flex-wrap:wrap;gap:10px}
.grid figure{margin:0;flex:1 1 420px}.kpi{display:flex;gap:14px;flex-wrap:wrap}.kpi div{background:#eef1f5;
border-radius:6px;padding:8px 14px}.kpi b{display:block;font-size:20px}pre{background:#f1f3f5;padding:8px;
font-size:12px;overflow:auto;max-height:320px}.warn{color:#b02a37}
""")

_ENV = Environment(loader=PackageLoader("cnnlab.reports"), autoescape=select_autoescape(default=True))


@dataclass(frozen=True)
class Section:
    """One section of a page: its anchor, heading and body (markup made with this kit)."""

    id: str
    title: str
    body: Markup


def page(title: str, subtitle: str, sections: Iterable[Section], script: Markup | None = None) -> str:
    """A whole self-contained page: the title, subtitle and sections through the autoescaping
    template (a body that is not Markup is shown as text), and an optional script of cnnlab's own."""
    return _ENV.get_template("page.html").render(
        title=title, subtitle=subtitle, css=CSS, sections=list(sections), script=script
    )


def join(parts: Iterable[Any]) -> Markup:
    """Pieces of markup (and text, escaped) one after another."""
    return Markup("").join(parts)


def _cell(v: Any) -> Any:
    return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else v)


def table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> Markup:
    """A table: floats to 4 decimals, None empty, text escaped (a Markup cell is kept as markup)."""
    head = join(Markup("<th>{}</th>").format(h) for h in header)
    body = join(Markup("<tr>{}</tr>").format(join(Markup("<td>{}</td>").format(_cell(v)) for v in r)) for r in rows)
    return Markup("<table><tr>{}</tr>{}</table>").format(head, body)


def kpis(pairs: Sequence[tuple[str, Any]]) -> Markup:
    """A row of tiles: a label above its figure (floats to 4 decimals)."""
    tiles = join(Markup("<div>{}<b>{}</b></div>").format(k, _cell(v)) for k, v in pairs)
    return Markup('<div class="kpi">{}</div>').format(tiles)


def pre(text: str) -> Markup:
    """Preformatted text (a config, a YAML), escaped."""
    return Markup("<pre>{}</pre>").format(text)


def img_tag(path: Path, alt: str) -> Markup:
    """A PNG file embedded in the page."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return Markup('<img src="data:image/png;base64,{}" alt="{}">').format(data, alt)


def thumbnails(images: Sequence[np.ndarray], captions: Sequence[str], side: int = 72) -> Markup:
    """A wrapping grid of (C, H, W) uint8 images, each embedded as a PNG (scaled to ``side`` px,
    nearest-neighbour for small ones) with its caption under it."""
    cards = []
    for img, caption in zip(images, captions):
        arr = np.asarray(img)
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
        im = Image.fromarray(np.ascontiguousarray(arr.astype(np.uint8)))
        im = im.resize((side, side), Image.Resampling.NEAREST if im.size[0] < side else Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, "PNG")
        data = base64.b64encode(buf.getvalue()).decode()
        cards.append(
            Markup(
                '<figure style="margin:0;width:{}px;font-size:11px"><img src="data:image/png;base64,{}" alt="{}">'
                "<figcaption>{}</figcaption></figure>"
            ).format(side + 40, data, caption, caption)
        )
    return Markup('<div style="display:flex;flex-wrap:wrap;gap:8px">{}</div>').format(join(cards))
