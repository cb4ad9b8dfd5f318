"""Legibility of every figure cnnlab draws: no two drawn texts overlap and none leaves the figure.

Measured on the draw that ``savefig`` does anyway (Text.draw is wrapped while it runs), so the
check costs no extra rendering; the conftest applies it to every figure any test saves.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from matplotlib.text import Text


def text_problems(fig, draw) -> list[str]:
    """Run ``draw()`` (which renders ``fig``) and return what overlaps or sticks out."""
    seen: list[tuple[Text, object]] = []
    frames: list[object] = []  # the figure's box at the dpi of this draw (savefig's, not the screen's)
    original = Text.draw

    def recording(self, renderer):
        out = original(self, renderer)
        if self.get_visible() and self.get_text().strip() and self.figure is fig:
            seen.append((self, self.get_window_extent(renderer)))
            frames.append(fig.bbox.frozen())
        return out

    Text.draw = recording
    try:
        draw()
    finally:
        Text.draw = original
    frame = frames[0] if frames else fig.bbox
    seen = list({id(t): (t, b) for t, b in seen}.values())  # a text drawn twice counts once
    problems = []
    for t, b in seen:
        if b.x0 < frame.x0 - 1 or b.y0 < frame.y0 - 1 or b.x1 > frame.x1 + 1 or b.y1 > frame.y1 + 1:
            problems.append(f"{t.get_text()[:30]!r} leaves the figure")
    for (t1, b1), (t2, b2) in itertools.combinations(seen, 2):
        w = min(b1.x1, b2.x1) - max(b1.x0, b2.x0)
        h = min(b1.y1, b2.y1) - max(b1.y0, b2.y0)
        if w > 1 and h > 1:
            problems.append(f"{t1.get_text()[:30]!r} overlaps {t2.get_text()[:30]!r}")
    return problems


def checked_save(original_layout, problems: list[str]):
    """A replacement for cnnlab.evaluate.plots.save_figure that records the problems of each figure."""
    import matplotlib.pyplot as plt

    def save(fig, path, tight=True):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if tight:
            original_layout(fig)
        problems.extend(f"{path.name}: {p}" for p in text_problems(fig, lambda: fig.savefig(path, dpi=110)))
        plt.close(fig)
        return path

    return save
