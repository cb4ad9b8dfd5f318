"""Adding a metric touches two files, its function and its catalogue row (issue 44): a made-up metric
registered by a fixture shows in `evaluate --json`, the CLI table, the report page and the board."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.core import metrics as catalogue_module
from cnnlab.core.metrics import Metric
from cnnlab.evaluate import metrics as metric_functions
from cnnlab.workflows.board import create_board


@pytest.fixture
def made_up_metric(monkeypatch):
    """A new single-label figure: the mean top probability (a share in [0, 1])."""
    row = Metric("confident_share", "confident share", "max", "single-label", True, True)
    monkeypatch.setattr(catalogue_module, "METRICS", [*catalogue_module.METRICS, row])
    monkeypatch.setattr(metric_functions, "REGISTERED", dict(metric_functions.REGISTERED))

    @metric_functions.register_metric("confident_share")
    def confident_share(y: np.ndarray, probs: np.ndarray) -> float:
        return float(probs.max(1).mean())

    return row


def test_a_registered_metric_reaches_evaluate_the_table_the_report_and_the_board(made_up_metric, tmp_path, capsys):
    from fastapi.testclient import TestClient

    run = tmp_path / "runs" / "r"
    flags = ["--data", "digits", "--model", "mlp", "--hidden", "16", "--epochs", "1", "-q", "--no-report"]
    assert main(["train", *flags, "--out", str(run)]) == 0
    saved = json.loads((run / "metrics.json").read_text())
    assert 0 < saved["confident_share"] < 1  # computed at the end of training too
    capsys.readouterr()

    assert main(["evaluate", str(run), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["confident_share"] == pytest.approx(saved["confident_share"])

    assert main(["evaluate", str(run)]) == 0
    table = capsys.readouterr().out
    assert re.search(rf"^confident share +{saved['confident_share']:.4f}$", table, re.M), table

    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "confident share" in page and f"{saved['confident_share']:.4f}" in page

    with TestClient(create_board(tmp_path, None, frozenset({"testserver"}))) as client:
        index = client.get("/api/index").json()
    assert {"name": "confident_share", "label": "confident share", "direction": "max"}.items() <= next(
        m for m in index["metrics"] if m["name"] == "confident_share"
    ).items()
    entry = next(e for e in index["entries"] if e["path"] == "runs/r")
    assert entry["metrics"]["confident_share"] == pytest.approx(saved["confident_share"])
