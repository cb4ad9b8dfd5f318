"""`cnnlab board`: the live local page over a folder of runs, sweeps, CVs and studies (issue 29)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from cnnlab.cli import main
from cnnlab.workflows.board import create_board
from tests.servers import free_port

CNNLAB = [sys.executable, "-m", "cnnlab"]
FLAGS = ["--data", "digits", "--model", "mlp", "--hidden", "32", "--epochs", "3", "-q", "--no-report"]
SHOTS = os.environ.get("CNNLAB_BOARD_SHOTS")  # a folder: the Chromium tests save the README's screenshots there


@contextlib.contextmanager
def board_server(root: Path, token: str | None = None) -> Iterator[str]:
    """The board over ``root`` on a free local port, in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    hosts = frozenset({"127.0.0.1", "localhost"})
    server = uvicorn.Server(
        uvicorn.Config(create_board(root, token, hosts), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 15
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def raw_get(base: str, target: str, headers: str = "") -> tuple[int, bytes]:
    """GET ``target`` exactly as written (no client normalises its dots away)."""
    url = urlparse(base)
    with socket.create_connection((url.hostname, url.port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A root with two finished runs that differ only in --seed (one test split: paired) and a sweep."""
    root = tmp_path_factory.mktemp("board")
    for seed in (0, 1):
        assert main(["train", *FLAGS, "--seed", str(seed), "--out", str(root / "runs" / f"seed{seed}")]) == 0
    spec = root / "sweep.yaml"
    spec.write_text(
        "name: tiny\nbase:\n  data: {source: digits}\n  model: {name: mlp, hidden: [32]}\n"
        "  train: {epochs: 2, batch_size: 64, seed: 0}\n  run: {report: false}\n"
        "space:\n  optim.lr: {type: log-float, low: 1.0e-4, high: 3.0e-2}\n"
        "  optim.weight_decay: {type: float, low: 0.0, high: 1.0e-3}\n"
        "method: random\ntrials: 6\nobjective: val_acc\nseed: 0\n"
    )
    assert main(["sweep", str(spec), "--out", str(root / "sweeps" / "tiny"), "-q"]) == 0
    cv = ["cv", "--folds", "3", "--data", "digits", "--model", "mlp", "--hidden", "32", "--epochs", "2", "-q"]
    assert main([*cv, "--no-report", "--out", str(root / "cv" / "mlp")]) == 0
    return root


def test_nothing_outside_the_root_is_served(finished, tmp_path):
    (finished / "escape").unlink(missing_ok=True)
    os.symlink("/etc", finished / "escape")
    try:
        with board_server(finished) as base:
            status, body = raw_get(base, "/file/runs/seed0/config.yaml")
            assert status == 200 and b"model" in body
            for target in (
                "/file/../../etc/passwd",
                "/file/%2e%2e/%2e%2e/etc/passwd",
                "/file/..%2f..%2fetc%2fpasswd",
                "/file/escape/passwd",  # a symbolic link inside the root pointing out of it
                "/file//etc/passwd",
                "/api/run?path=../../etc",
            ):
                status, body = raw_get(base, target)
                assert status in (403, 404), (target, status)
                assert b"root:" not in body
    finally:
        (finished / "escape").unlink()


def test_a_public_address_needs_a_token_and_every_route_checks_it(finished, capsys):
    assert main(["board", str(finished), "--host", "0.0.0.0"]) == 2
    assert "--token" in capsys.readouterr().err
    with board_server(finished, token="s3cret") as base:
        routes = ["/", "/static/plotly.min.js", "/api/index", "/api/run?path=runs/seed0", "/events",
                  "/file/runs/seed0/config.yaml", "/api/group?path=sweeps/tiny"]  # fmt: skip
        for route in routes:
            assert raw_get(base, route)[0] == 401, route
            assert raw_get(base, route, "Authorization: Bearer wrong\r\n")[0] == 401, route
        for route in routes[:4]:
            assert raw_get(base, route, "Authorization: Bearer s3cret\r\n")[0] == 200, route
        assert raw_get(base, "/api/index?token=s3cret")[0] == 200
        status, _ = raw_get(base, "/api/index", "Cookie: cnnlab_board=s3cret\r\n")
        assert status == 200


def test_the_index_lists_runs_and_sweeps_and_compares_two_runs(finished):
    import httpx

    with board_server(finished) as base:
        index = httpx.get(base + "/api/index").json()
        by_path = {e["path"]: e for e in index["entries"]}
        assert by_path["runs/seed0"]["status"] == "completed" and by_path["runs/seed0"]["model"] == "mlp"
        assert by_path["sweeps/tiny"]["kind"] == "sweep"
        trials = [p for p, e in by_path.items() if p.startswith("sweeps/tiny/") and e["kind"] == "run"]
        assert len(trials) == 6
        cmp = httpx.get(base + "/api/compare", params=[("path", "runs/seed0"), ("path", "runs/seed1")]).json()
        assert ["train.seed", 0, 1] in cmp["differ"]
        assert cmp["paired"]["images"] > 0 and "mcnemar" in cmp["paired"]
        sweep = httpx.get(base + "/api/group", params={"path": "sweeps/tiny"}).json()
        assert len(sweep["summary"]["trials"]) == 6 and [b["epoch"] for b in sweep["band"]][:2] == [1, 2]
        assert sweep["band"][0]["min"] <= sweep["band"][0]["mean"] <= sweep["band"][0]["max"]


def _chromium():
    if not Path(shutil.which("chromium") or "/usr/bin/chromium").exists():
        pytest.skip("Debian's chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    return sync_playwright()


def _watch(page, base: str) -> list[str]:
    """Console errors, failed requests and any request that leaves 127.0.0.1."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}") if "/events" not in r.url else None)
    page.on("request", lambda r: problems.append(f"left the machine: {r.url}") if not r.url.startswith(base) else None)
    return problems


def _launch(p):
    return p.chromium.launch(
        executable_path=shutil.which("chromium") or "/usr/bin/chromium",
        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )


def test_a_run_appears_live_gains_points_and_completes_without_a_reload(tmp_path):
    with _chromium() as p, board_server(tmp_path) as base:
        browser = _launch(p)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        problems = _watch(page, base)
        page.goto(base + "/")
        page.wait_for_selector("#index")
        page.evaluate("window.__loaded = performance.timeOrigin")
        run = tmp_path / "runs" / "live"
        argv = CNNLAB + ["train", "--data", "digits", "--model", "cnn", "--epochs", "5", "--batch-size", "8",
                         "--no-report", "-q", "--out", str(run)]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            while not run.exists():
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.02)
            created = time.time()
            page.wait_for_selector('tr[data-path="runs/live"] td.running', timeout=5000)
            assert time.time() - created <= 2.0
            page.click('a[href="#/run/runs%2Flive"]')
            page.wait_for_selector("#run-acc .main-svg")
            history = run / "history.csv"
            points = 0
            while proc.poll() is None:
                rows = len(history.read_text().splitlines()) - 1 if history.is_file() else 0
                if rows > points:
                    written = time.time()
                    shown = "document.getElementById('run-acc').data"
                    # a function, not an expression: the board's CSP refuses the eval Playwright uses for one
                    page.wait_for_function(f"() => {shown} && {shown}[1].x.length >= {rows}", timeout=5000)
                    assert time.time() - written <= 2.0, f"epoch {rows} took {time.time() - written:.1f} s to appear"
                    points = rows
                time.sleep(0.05)
            assert proc.returncode == 0, proc.stderr.read()
            page.wait_for_selector("#run-status .completed", timeout=5000)
            assert points >= 4
            assert page.evaluate("window.__loaded") == page.evaluate("performance.timeOrigin")  # never reloaded
            if SHOTS:
                page.screenshot(
                    path=str(Path(SHOTS) / "board-run.png"), clip={"x": 0, "y": 0, "width": 1200, "height": 820}
                )
        finally:
            proc.kill()
        assert problems == []
        browser.close()


def test_ticking_two_runs_overlays_them_and_brushing_an_axis_filters_the_trials(finished):
    with _chromium() as p, board_server(finished) as base:
        browser = _launch(p)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        problems = _watch(page, base)
        page.goto(base + "/")
        page.wait_for_selector('input[data-p="runs/seed0"]')
        if SHOTS:
            page.locator("main").screenshot(path=str(Path(SHOTS) / "board-index.png"))
        page.check('input[data-p="runs/seed0"]')
        page.check('input[data-p="runs/seed1"]')
        page.click("#cmp")
        page.wait_for_selector("#cmp-acc .main-svg")
        assert page.evaluate("document.getElementById('cmp-acc').data.length") == 2
        assert "train.seed" in page.inner_text("#differ")
        assert "McNemar exact p" in page.inner_text("#paired")
        if SHOTS:
            page.locator("main").screenshot(path=str(Path(SHOTS) / "board-compare.png"))
        page.goto(base + "/#/group/sweeps%2Ftiny")
        page.wait_for_selector("#parcoords .main-svg")
        assert page.inner_text("#trial-count").startswith("6 of 6")
        page.wait_for_selector("#pace .main-svg")  # issue 46: best so far against wall time
        assert page.locator("#pace .scatterlayer .trace .point").count() >= 1  # a point per finished trial
        box = page.locator("#parcoords .axis-brush").first.bounding_box()
        assert box is not None
        x = box["x"] + box["width"] / 2
        page.mouse.move(x, box["y"] + box["height"] * 0.55)
        page.mouse.down()
        page.mouse.move(x, box["y"] + box["height"] * 0.98, steps=8)
        page.mouse.up()
        page.wait_for_function(
            "() => !document.getElementById('trial-count').innerText.startsWith('6 of 6')", timeout=5000
        )
        shown = int(page.inner_text("#trial-count").split()[0])
        assert 0 < shown < 6  # the lower half of the first axis (the smaller learning rates)
        assert page.locator("#trials tr").count() == shown + 1
        if SHOTS:
            page.locator("main").screenshot(path=str(Path(SHOTS) / "board-sweep.png"))
        page.goto(base + "/#/group/cv%2Fmlp")
        page.wait_for_selector("#ranking")
        assert page.locator("#ranking a").count() == 3  # one link per fold run
        assert "95 % bootstrap interval" in page.inner_text("#cv-summary")
        page.click('#ranking a[href="#/run/cv%2Fmlp%2Fr1-fold2"]')
        page.wait_for_selector("#run-acc .main-svg")
        page.goto(base + "/#/group/cv%2Fmlp")
        page.wait_for_selector("#ranking")
        if SHOTS:
            page.locator("main").screenshot(path=str(Path(SHOTS) / "board-cv.png"))
        assert problems == []
        browser.close()


def test_train_prints_the_board_command_once(tmp_path):
    proc = subprocess.run(
        CNNLAB
        + ["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--no-report", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("watch it live: cnnlab board") == 1


def _linked_run(root: Path, secret: Path) -> Path:
    """A copy of a finished run whose config.yaml, metrics.json and history.csv are links to ``secret``
    (a file outside the board's root)."""
    run = root / "runs" / "linked"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(root / "runs" / "seed0", run)
    for name in ("config.yaml", "metrics.json", "history.csv"):
        (run / name).unlink()
        os.symlink(secret, run / name)
    return run


def test_a_link_out_of_the_root_is_refused_by_every_route_that_reads_files(finished, tmp_path):
    import httpx

    secret = tmp_path / "secret.yaml"
    secret.write_text('model: {name: "TOPSECRET"}\naccuracy: 0.123456\n')
    run = _linked_run(finished, secret)
    try:
        with board_server(finished) as base:
            index = httpx.get(base + "/api/index").json()
            entry = next(e for e in index["entries"] if e["path"] == "runs/linked")
            assert entry["status"] == "damaged" and "TOPSECRET" not in json.dumps(index)
            for route, params in (("/api/run", [("path", "runs/linked")]),
                                  ("/api/compare", [("path", "runs/linked"), ("path", "runs/seed0")]),
                                  ("/file/runs/linked/config.yaml", [])):  # fmt: skip
                r = httpx.get(base + route, params=params)
                assert r.status_code == 403 and "TOPSECRET" not in r.text, (route, r.status_code, r.text[:200])
    finally:
        shutil.rmtree(run)


def test_a_nul_or_an_over_long_path_is_a_400_and_a_token_no_header_can_carry_is_refused(finished, capsys):
    with board_server(finished) as base:
        for target in ("/file/runs/seed0/config.yaml%00.png", "/api/run?path=runs%00", "/file/" + "a" * 5000,
                       "/api/run?path=" + "b" * 5000):  # fmt: skip
            status, body = raw_get(base, target)
            assert status == 400 and b"Traceback" not in body, (target[:40], status)
    for token in ("x\ny", "tab\there", "é-non-ascii", "semi;colon"):
        assert main(["board", str(finished), "--token", token]) == 2
        assert "--token" in capsys.readouterr().err


def test_the_board_page_has_a_content_security_policy_and_files_are_served_sandboxed(finished):
    import httpx

    with board_server(finished) as base:
        page = httpx.get(base + "/")
        csp = page.headers["content-security-policy"]
        scripts = csp.split("script-src")[1].split(";")[0]
        assert "'self' 'unsafe-eval' 'sha256-" in scripts and "'unsafe-inline'" not in scripts
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        for name in ("config.yaml", "history.csv"):
            r = httpx.get(f"{base}/file/runs/seed0/{name}")
            assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["content-security-policy"].startswith("sandbox")


def test_a_planted_page_cannot_read_another_file_with_the_viewers_token(finished):
    """report.html planted under the root, opened by a viewer who holds the token: its script runs in
    a sandbox (an opaque origin), so the board answers it nothing and the viewer's cookie stays put."""
    planted = finished / "planted"
    planted.mkdir(exist_ok=True)
    (planted / "report.html").write_text(
        "<!DOCTYPE html><html><body><script>fetch('/api/index', {credentials: 'include'})"
        ".then((r) => r.text()).then((t) => { document.title = 'LEAKED ' + t.length; })"
        ".catch((e) => { document.title = 'blocked'; });"
        "try { document.title += ' cookie=' + document.cookie; } catch (e) { document.title = 'blocked'; }"
        "</script></body></html>"
    )
    try:
        with _chromium() as p, board_server(finished, token="s3cret") as base:
            browser = _launch(p)
            page = browser.new_page()
            page.goto(base + "/?token=s3cret")  # the viewer: the board sets its cookie
            page.wait_for_selector("#index tr[data-path]")
            page.goto(base + "/file/planted/report.html")
            page.wait_for_timeout(1500)
            title = page.title()
            browser.close()
        assert "LEAKED" not in title and "s3cret" not in title, title
    finally:
        shutil.rmtree(planted)


def test_a_100_mb_history_and_deeply_nested_state_files_are_read_in_bounds(finished, tmp_path):
    """A run whose history.csv is 100 MB is answered from its last rows (≤ 2 s, bounded memory); runs
    and groups whose JSON is nested 100,000 deep or 65 MB long are listed as damaged and the board
    starts and answers."""
    import tracemalloc

    import httpx

    big, deep, huge, cv = (finished / "runs" / n for n in ("big", "deep", "huge", "cvdeep"))
    for folder in (big, deep, huge):
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(finished / "runs" / "seed0", folder)
    header = (big / "history.csv").read_text().splitlines()[0]
    row = ",".join(["1"] + ["0.5"] * (len(header.split(",")) - 1))
    with open(big / "history.csv", "w") as f:
        f.write(header + "\n")
        block = "".join(row.replace("1", str(i), 1) + "\n" for i in range(1, 20_001))
        while f.tell() < 100 << 20:
            f.write(block)
    (deep / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    (huge / "metrics.json").write_text('{"accuracy": 0.5, "pad": "' + "x" * (65 << 20) + '"}')
    shutil.rmtree(cv, ignore_errors=True)
    cv.mkdir()
    (cv / "cv.json").write_text('{"a":' * 50_000 + "1" + "}" * 50_000)
    try:
        with board_server(finished) as base:
            index = {e["path"]: e for e in httpx.get(base + "/api/index").json()["entries"]}
            assert index["runs/deep"]["status"] == "damaged" and index["runs/huge"]["status"] == "damaged"
            assert index["runs/cvdeep"]["status"] == "damaged"
            tracemalloc.start()
            started = time.perf_counter()
            r = httpx.get(base + "/api/run", params={"path": "runs/big"}, timeout=30)
            took, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert r.status_code == 200 and len(r.json()["history"]) == 10_000
            assert took <= 2 and peak <= 300 << 20, (took, peak >> 20)
            for path in ("runs/deep", "runs/huge"):
                r = httpx.get(base + "/api/run", params={"path": path}, timeout=30)
                assert r.status_code == 422 and "damaged" in r.json()["detail"], (path, r.text[:200])
    finally:
        for folder in (big, deep, huge, cv):
            shutil.rmtree(folder, ignore_errors=True)
