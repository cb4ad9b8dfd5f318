"""The service under hostile load (issue 23): decompression bombs in every container, PNGs that
multiply memory inside the pixel budget, formats it does not decode, DNS rebinding, duplicate
credentials, stalled and abandoned uploads. A child server's peak RSS is measured."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from cnnlab import api
from cnnlab.workflows.resolve import build_config
from tests.attack import files
from tests.workflows.test_deploy import Server

PEAK_RSS_LIMIT = 1.5 * 2**30


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("svc") / "mlp"
    cfg = {"data.source": "digits", "model.name": "mlp", "model.hidden": [16], "train.epochs": 1}
    return api.train(build_config(None, {**cfg, "run.out": str(out), "run.report": False}), progress=False).run


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_16_clients_of_bombs_and_memory_multiplying_pngs_keep_the_server_under_1_5_gb(digits_run):
    import httpx

    server = Server(digits_run)
    cases = {
        "16-bit 3999² PNG": (files.png16(), 200),
        "palette + tRNS 3999² PNG": (files.palette_png(), 200),
        "20000² ICO bomb": (files.ico_bomb(), 415),
        "20000² PNG bomb": (files.png_bomb(), 413),
    }
    got: list[tuple[str, int, str]] = []
    try:
        for name, (body, _) in cases.items():

            def client(body=body, name=name) -> None:
                with httpx.Client(base_url=server.url, timeout=120) as c:
                    for _ in range(3):
                        r = c.post("/predict", content=body, headers={"Content-Type": "image/png"})
                        got.append((name, r.status_code, r.text[:200]))

            threads = [threading.Thread(target=client) for _ in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        peak = _peak_rss(server.proc.pid)
        info = httpx.get(server.url + "/info").json()
    finally:
        log = server.stop()
    assert len(got) == 4 * 16 * 3
    wrong = [(n, s, t) for n, s, t in got if s != cases[n][1]]
    assert not wrong, wrong[:5]
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / 2**30:.2f} GB"
    assert "Traceback" not in log
    assert info["limits"]["decode_memory_mb"] == 512 and info["limits"]["max_pixels"] == 16_000_000
    assert info["run"] == digits_run.name  # a name, not the training machine's path
    print(f"peak RSS of the server: {peak / 2**20:.0f} MB")


def test_host_header_duplicate_credentials_stalled_and_abandoned_uploads(digits_run):
    import httpx

    server = Server(digits_run, "--body-timeout", "1", "--allowed-host", "models.internal")
    good = files.png(28, value=40)
    try:
        post = lambda **kw: httpx.post(server.url + "/predict", content=good, timeout=30, **kw)  # noqa: E731
        assert post(headers={"Content-Type": "image/png"}).status_code == 200
        r = post(headers={"Content-Type": "image/png", "Host": "evil.example"})  # DNS rebinding
        assert r.status_code == 403 and "evil.example" in r.json()["detail"]
        assert post(headers={"Content-Type": "image/png", "Host": "models.internal:8000"}).status_code == 200
        dup = httpx.post(
            server.url + "/predict",
            content=good,
            headers=[("Content-Type", "image/png"), ("Authorization", "Bearer a"), ("Authorization", "Bearer b")],
        )
        assert dup.status_code == 400 and "more than one Authorization" in dup.json()["detail"]
        for stalled in range(2):  # a client that stops sending its body: 408 after the timeout
            with socket.create_connection(("127.0.0.1", server.port)) as s:
                s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                          b"Content-Length: 1000\r\n\r\n" + good[:100])  # fmt: skip
                s.settimeout(10)
                assert s.recv(200).startswith(b"HTTP/1.1 408")
        for _ in range(3):  # a client that hangs up mid-body
            with socket.create_connection(("127.0.0.1", server.port)) as s:
                s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                          b"Content-Length: 100000\r\n\r\n" + good[:100])  # fmt: skip
            time.sleep(0.3)
        assert post(headers={"Content-Type": "image/png"}).status_code == 200
    finally:
        log = server.stop()
    assert "Traceback" not in log, log[-3000:]
