"""`cnnlab cv --audit-labels`: rank the images whose given label the out-of-fold models doubt.

Cross-validation predicts every image outside the test split once, by a model that never trained on
it; cleanlab's confident learning (Northcutt et al. 2021) reads those out-of-fold probabilities:
``find_label_issues`` flags likely label errors (pruned by the estimated noise rate per class) and
``get_label_quality_scores`` (self-confidence: the probability of the given label) ranks every
image. Nothing here re-implements confident learning.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.core.atomic import atomic_write_text
from cnnlab.core.errors import CnnlabError
from cnnlab.core.state import CvFold
from cnnlab.data.files import shown_path
from cnnlab.data.pipeline import PreparedData
from cnnlab.reports.groups import label_audit_page
from cnnlab.runs.group import RunGroup

log = logging.getLogger(__name__)

SHOWN = 60  # thumbnails on the audit page


def out_of_fold(group: RunGroup, rows: list[CvFold]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dataset indices, given labels, probabilities) of the first repeat's held-out images, each
    fold's seeds averaged."""
    idx, labels, probs = [], [], []
    for row in rows:
        if row.repeat != 1:
            continue
        parts = [np.load(group.run(name).predictions_npz) for name in row.run_names]
        idx.append(parts[0]["indices"])
        labels.append(parts[0]["labels"])
        probs.append(np.mean([p["probs"] for p in parts], axis=0))
    return np.concatenate(idx), np.concatenate(labels), np.concatenate(probs)


def audit_labels(out: Path, rows: list[CvFold], group: RunGroup, data: PreparedData) -> dict[str, Any]:
    """Write label_audit.csv (every out-of-fold image, most doubtful first), label_issues.csv (the
    ones cleanlab flags: ready for ``--exclude``) and label_audit.html (thumbnails of the first
    ones, with given label, suggested label and confidence); return a summary for cv.json."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if data.multilabel:
        raise CnnlabError("--audit-labels is for single-label data (one class per image)")
    idx, y, p = out_of_fold(group, rows)
    p = np.clip(p, 1e-12, 1)
    p = p / p.sum(1, keepdims=True)
    quality = get_label_quality_scores(y, p)
    flagged = find_label_issues(y, p, n_jobs=1)  # no worker pool: forking a process that holds threads can hang
    order = np.argsort(quality, kind="stable")
    classes = data.classes
    table_rows: list[dict[str, Any]] = []
    for rank, j in enumerate(order, 1):
        i = int(idx[j])
        table_rows.append(
            {
                "rank": rank,
                "index": i,
                "path": shown_path(data.paths[i]) if data.paths else "",
                "given": classes[int(y[j])],
                "suggested": classes[int(p[j].argmax())],
                "suggested_confidence": round(float(p[j].max()), 4),
                "given_probability": round(float(p[j, int(y[j])]), 4),
                "quality": round(float(quality[j]), 5),
                "issue": bool(flagged[j]),
            }
        )
    _write_csv(out / "label_audit.csv", table_rows)
    _write_csv(out / "label_issues.csv", [r for r in table_rows if r["issue"]])
    shown = [np.asarray(data.images[int(r["index"])]) for r in table_rows[:SHOWN]]
    shown = [im[0] if im.ndim == 4 else im for im in shown]
    atomic_write_text(out / "label_audit.html", label_audit_page(table_rows, shown, data.source, int(flagged.sum())))
    summary = {
        "images": len(table_rows),
        "issues": int(flagged.sum()),
        "method": "cleanlab find_label_issues (prune_by_noise_rate) and self-confidence ranking, out-of-fold",
        "files": ["label_audit.csv", "label_issues.csv", "label_audit.html"],
        "top": table_rows[:20],
    }
    log.info("label audit: %d of %d images flagged (label_issues.csv)", summary["issues"], summary["images"])
    return summary


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = [
        "rank",
        "index",
        "path",
        "given",
        "suggested",
        "suggested_confidence",
        "given_probability",
        "quality",
        "issue",
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())
