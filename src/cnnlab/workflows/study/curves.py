"""Learning curves by data size (``cnnlab study --fractions``): each candidate's validation error
at each share of the training split, a power law fitted per candidate, where two curves cross and
what doubling the data is predicted to give."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cnnlab.core.errors import CnnlabError

FLOOR = 1e-3  # an error of 0 has no logarithm: counted as this (one image in a thousand)


def parse_fractions(text: str | list[float] | None) -> list[float]:
    """``0.1,0.25,0.5,1`` → sorted shares in (0, 1], the whole split (1) always among them."""
    if text is None:
        return []
    items = text if isinstance(text, list) else [t for t in str(text).split(",") if t.strip()]
    try:
        values = sorted({float(t) for t in items})
    except (TypeError, ValueError):
        values = []
    if not values:
        raise CnnlabError(f"--fractions {text!r}: give shares of the training split, e.g. 0.1,0.25,0.5,1")
    if not all(math.isfinite(v) and 0 < v <= 1 for v in values):
        raise CnnlabError(f"--fractions {text!r}: every share must be above 0 and at most 1")
    values = sorted(set(values) | {1.0})
    if len(values) < 3:
        raise CnnlabError(
            f"--fractions {text!r}: a curve needs at least 3 sizes (with the whole split), e.g. 0.25,0.5,1"
        )
    return values


def fit(points: list[tuple[int, float | None]]) -> dict[str, Any] | None:
    """A power law error = a · n^b through (training images, validation accuracy) points, by least
    squares on the logarithms (scipy's linregress); None with fewer than 2 sizes."""
    from scipy import stats

    pts = sorted((n, acc) for n, acc in points if n > 0 and acc is not None and math.isfinite(acc))
    if len({n for n, _ in pts}) < 2:
        return None
    x = np.log([n for n, _ in pts])
    y = np.log([max(1 - acc, FLOOR) for _, acc in pts])
    r = stats.linregress(x, y)
    n_max = pts[-1][0]
    return {
        "points": [[int(n), float(acc)] for n, acc in pts],
        "log_a": float(r.intercept),
        "b": float(r.slope),  # negative when more data helps
        "r2": float(r.rvalue**2) if len(pts) > 2 else None,
        "n_max": int(n_max),
        "at_max": predict(r.intercept, r.slope, n_max),
        "at_double": predict(r.intercept, r.slope, 2 * n_max),
        # the fitted curve from the smallest size to twice the largest, for the report's figure
        "line": [[float(n), predict(r.intercept, r.slope, n)] for n in np.geomspace(pts[0][0], 2 * n_max, 40)],
    }


def predict(log_a: float, b: float, n: float) -> float:
    """Accuracy the fitted law predicts for ``n`` training images."""
    return float(1 - math.exp(log_a + b * math.log(n)))


def crossings(fits: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """For each pair of candidates, the training-set size where their fitted curves cross, and
    whether it lies within the sizes trained (otherwise: which one is ahead over the whole range)."""
    names = sorted(fits)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            fa, fb = fits[a], fits[b]
            lo = max(min(n for n, _ in fa["points"]), min(n for n, _ in fb["points"]))
            hi = min(fa["n_max"], fb["n_max"])
            row: dict[str, Any] = {"a": a, "b": b, "range": [lo, hi]}
            if abs(fa["b"] - fb["b"]) < 1e-12:
                row["n"] = None
            else:
                row["n"] = float(math.exp((fb["log_a"] - fa["log_a"]) / (fa["b"] - fb["b"])))
            row["within"] = row["n"] is not None and lo <= row["n"] <= hi
            ahead_lo = a if predict(fa["log_a"], fa["b"], lo) >= predict(fb["log_a"], fb["b"], lo) else b
            ahead_hi = a if predict(fa["log_a"], fa["b"], hi) >= predict(fb["log_a"], fb["b"], hi) else b
            row["ahead_small"], row["ahead_large"] = ahead_lo, ahead_hi
            row["sentence"] = crossing_sentence(row)
            out.append(row)
    return out


def crossing_sentence(row: dict[str, Any]) -> str:
    lo, hi = row["range"]
    if row["within"]:
        return (
            f"{row['a']} and {row['b']} cross at about {row['n']:,.0f} training images: {row['ahead_small']} "
            f"is ahead below, {row['ahead_large']} above (fitted power laws)"
        )
    beyond = ""
    if row["n"] is not None and row["n"] > hi:
        beyond = f"; extrapolated, they would cross at about {row['n']:,.0f} images"
    return (
        f"{row['a']} and {row['b']} do not cross between {lo:,} and {hi:,} training images: "
        f"{row['ahead_large']} is ahead throughout{beyond}"
    )
