"""`cnnlab compare`: run folders side by side on one page, or two cross-validations fold by fold."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnlab.core.errors import CnnlabError
from cnnlab.workflows.cv import paired_comparison, read_cv
from cnnlab.workflows.evaluation import compare

__all__ = ["compare_results"]


def compare_results(paths: Sequence[str | Path], out: str | Path = "compare.html", metric: str = "accuracy"
                    ) -> dict[str, Any]:  # fmt: skip
    """Two CV folders → their paired comparison on ``metric`` (``kind: "cv"``); run folders → the
    comparison page written to ``out`` (``kind: "runs"``, ``page``)."""
    cvs = [read_cv(p) for p in paths]
    if any(cvs):
        a, b = cvs if len(cvs) == 2 else (None, None)
        if a is None or b is None:
            raise CnnlabError("compare takes run folders, or exactly two cross-validation folders (from cnnlab cv)")
        return {"kind": "cv", **paired_comparison(a, b, metric)}
    return {"kind": "runs", "page": str(compare(paths, out))}
