"""Every page is rendered with autoescaping (issue 44): a dataset whose class names, folder names, run
names and config strings carry script payloads produces report, compare, sweep, CV, seed-group,
study and label-audit pages in which no such element or handler exists (each page parsed), and a
board over them runs none of them in Chromium."""

from __future__ import annotations

import csv
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from tests.conftest import class_image

# class names cannot hold "/" in a folder, but a label file's can; the spaceless form stays one label
CLASSES = ["<script>alert(1)</script>", '"><img/src=x/onerror=alert(2)>', "plain", "'onmouseover='alert(3)"]
FOLDER = 'd"><img src=x onerror=alert(4)>'  # a folder name: in data.source and every path the pages show
RUN = 'r"><svg onload=alert(5)>'  # a run name


# the names of every on* attribute in the live document
ALL_HANDLERS = (
    "[...document.querySelectorAll('*')].flatMap(e => [...e.attributes].map(a => a.name))"
    ".filter(n => n.startsWith('on'))"
)


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the text of each script element."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def assert_inert(page: Path) -> None:
    """No planted element, handler or script in ``page`` (cnnlab's own scripts hold no payload), and
    some payload is on the page as text."""
    from markupsafe import escape

    text = page.read_text()
    parsed = _Elements()
    parsed.feed(text)
    handlers = [(tag, a) for tag, attrs in parsed.tags for a, _ in attrs if a.lower().startswith("on")]
    assert not handlers, f"{page.name}: event handlers {handlers}"
    assert not [t for t, _ in parsed.tags if t in ("svg", "iframe", "object", "embed")], page.name
    imgs = [dict(a).get("src", "") for t, a in parsed.tags if t == "img"]
    assert all(src.startswith("data:image/png;base64,") for src in imgs), f"{page.name}: img src {imgs}"
    assert not any("alert(" in s for s in parsed.scripts), f"{page.name}: a planted script ran into the page"
    assert "<script>alert(1)</script>" not in text, page.name
    assert any(str(escape(p)) in text for p in [*CLASSES, FOLDER, RUN]), f"{page.name} shows no payload as text"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """A label file of 4 payload-named classes in a payload-named folder, and the pages made from it."""
    root = tmp_path_factory.mktemp("hostile")
    data = root / FOLDER
    (data / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    with open(data / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        for i in range(96):
            Image.fromarray(class_image(i % 4, 24, rng)).save(data / "images" / f"{i:03d}.png")
            w.writerow([f"images/{i:03d}.png", CLASSES[i % 4]])
    return root


def _train(root: Path, name: str, *extra: str) -> Path:
    out = root / "runs" / name
    flags = ["--data", str(root / FOLDER / "labels.csv"), "--model", "mlp", "--hidden", "16", "--epochs", "2", "-q"]
    assert main(["train", *flags, *extra, "--out", str(out)]) == 0
    return out


def test_run_and_compare_pages_show_payloads_as_text(hostile, tmp_path, monkeypatch):
    a, b = _train(hostile, RUN), _train(hostile, "other", "--seed", "1", "--no-report")
    assert_inert(a / "report.html")
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "compare.html")]) == 0
    assert_inert(tmp_path / "compare.html")


def test_seed_group_cv_and_label_audit_pages_show_payloads_as_text(hostile):
    flags = ["--data", str(hostile / FOLDER / "labels.csv"), "--model", "mlp", "--hidden", "16", "--epochs", "1", "-q"]
    assert main(["train", *flags, "--seeds", "2", "--no-report", "--out", str(hostile / "seeds" / RUN)]) == 0
    assert_inert(hostile / "seeds" / RUN / "seeds.html")
    out = hostile / "cv" / RUN
    assert main(["cv", *flags, "--folds", "3", "--audit-labels", "--no-report", "--out", str(out)]) == 0
    assert_inert(out / "cv.html")
    audit = next(out.rglob("label_audit.html"))
    assert_inert(audit)


def test_sweep_page_shows_payloads_as_text(hostile):
    spec = hostile / "sweep.yaml"
    source = str(hostile / FOLDER / "labels.csv").replace("'", "''")
    spec.write_text(
        f"name: s\nbase:\n  data: {{source: '{source}'}}\n  model: {{name: mlp, hidden: [16]}}\n"
        "  train: {epochs: 1, batch_size: 32, seed: 0}\n  run: {report: false}\n"
        "space:\n  optim.lr: {type: log-float, low: 1.0e-4, high: 3.0e-2}\n"
        "method: random\ntrials: 2\nobjective: val_acc\nseed: 0\n"
    )
    out = hostile / "sweeps" / RUN
    assert main(["sweep", str(spec), "--out", str(out), "-q"]) == 0
    assert_inert(out / "sweep.html")


def test_study_page_shows_payloads_as_text(hostile):
    out = hostile / "studies" / RUN
    args = ["study", str(hostile / FOLDER / "labels.csv"), "--models", "mlp", "--budget", "40s", "--out", str(out)]
    assert main([*args, "-q"]) == 0
    assert_inert(out / "report.html")


def test_the_board_over_the_hostile_folders_runs_no_payload_in_chromium(hostile):
    from urllib.parse import quote

    from tests.workflows.test_board import _chromium, _launch, _watch, board_server

    views = [f"run/{quote('runs/' + RUN, safe='')}", f"compare/{quote('runs/' + RUN, safe='')},runs%2Fother"]
    views += [f"group/{quote(g + '/' + RUN, safe='')}" for g in ("seeds", "cv", "sweeps", "studies")]
    with _chromium() as p, board_server(hostile) as base:
        browser = _launch(p)
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        problems = _watch(page, base)
        page.goto(base + "/")
        page.wait_for_selector("#index tr[data-path]")
        for view in views:
            page.goto(f"{base}/#/{view}")
            page.wait_for_timeout(700)
        handlers = page.evaluate(ALL_HANDLERS)
        browser.close()
    assert not dialogs, f"a payload ran on the board: {dialogs}"
    assert not handlers and not [p for p in problems if "left the machine" in p], (handlers, problems)


def test_tampered_group_files_run_no_payload_on_the_board(hostile):
    """sweep.json's trial, done and budget and cv.json's folds and repeats are shown by the board: a
    payload planted in each is shown as text."""
    import json
    from urllib.parse import quote

    from tests.workflows.test_board import _chromium, _launch, board_server

    sweep, cv = hostile / "sweeps" / RUN / "sweep.json", hostile / "cv" / RUN / "cv.json"
    s = json.loads(sweep.read_text())
    s.update(done="<img src=x onerror=alert(11)>", budget="<img src=x onerror=alert(12)>")
    s["trials"][0]["trial"] = "<img src=x onerror=alert(13)>"
    sweep.write_text(json.dumps(s))
    c = json.loads(cv.read_text())
    c.update(folds="<img src=x onerror=alert(14)>", repeats="<img src=x onerror=alert(15)>")
    cv.write_text(json.dumps(c))
    with _chromium() as p, board_server(hostile) as base:
        browser = _launch(p)
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(base + "/")
        page.wait_for_selector("#index tr[data-path]")
        for group in ("sweeps", "cv"):
            page.goto(f"{base}/#/group/{quote(group + '/' + RUN, safe='')}")
            page.wait_for_timeout(800)
        handlers = page.evaluate(ALL_HANDLERS)
        browser.close()
    assert not dialogs and not handlers, (dialogs, handlers)
