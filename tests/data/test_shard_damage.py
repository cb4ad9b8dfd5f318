"""Shards are validated on read (issue 23, item 10): every kind of damage is one line naming the
shard, a short shard is an error rather than half an epoch, shard paths stay inside the folder,
members are bounded before they are read, and a failing server is given up on in bounded time."""

from __future__ import annotations

import http.server
import json
import shutil
import tarfile
import threading
import time

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.data import shards
from tests.attack import files


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "digits"
    assert main(["data", "shard", "digits", "--out", str(out), "--shard-size", "0.03"]) == 0
    return out


def _first(folder, split="train"):
    index = json.loads((folder / "index.json").read_text())
    return folder / index["splits"][split]["shards"][0]["file"], index


_member = files.tar_member


def _symlink_first(m, data):
    if m.name.endswith(".u8") and m.name.startswith("000000000"):
        link = tarfile.TarInfo(m.name)
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        return [(link, None)]
    return [(m, data)]


def _label(value):
    return lambda m, data: [_member(m.name, value) if m.name.startswith("000000003.cls") else (m, data)]


def _short_pixels(m, data):
    return [_member(m.name, data[:10]) if m.name.startswith("000000002.u8") else (m, data)]


def _drop_sample(m, data):
    return [] if m.name.startswith("000000001.") else [(m, data)]


def _png_instead(side):
    def change(m, data):
        if m.name.startswith("000000000.u8"):
            return [_member("000000000.png", files.png(side))]
        return [(m, data)]

    return change


def _foreign(m, data):
    return [(m, data), _member("evil.py", b"print(1)")] if m.name.startswith("000000000.cls") else [(m, data)]


TAR_DAMAGE = {
    "symlink member": (_symlink_first, "is a symbolic link, not a file"),
    "label 999": (_label(b"999"), "class 999 is not one of the 10 classes"),
    "label text": (_label(b"cat"), "its class is not a whole number"),
    "short pixel member": (_short_pixels, "10 pixel bytes, not 64"),
    "one sample fewer": (_drop_sample, "holds 118 samples; its index says 119"),
    "PNG of another size": (_png_instead(64), "not a 8×8 L PNG"),
    "foreign member": (_foreign, "is not KEY.png, KEY.u8 or KEY.cls"),
}


def _train(folder, tmp_path):
    return main(["train", "--data", str(folder), "--model", "mlp", "--epochs", "1", "-q", "--no-report",
                 "--out", str(tmp_path / "run"), "--overwrite"])  # fmt: skip


def _one_line(capsys, message):
    err = capsys.readouterr().err
    assert message in err, err[-2000:]
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-2000:]


@pytest.mark.parametrize("case", sorted(TAR_DAMAGE))
def test_a_damaged_shard_is_one_line_naming_it(good, tmp_path, capsys, case):
    folder = tmp_path / "s"
    shutil.copytree(good, folder)
    tar_path, index = _first(folder)
    if case == "one sample fewer":
        count = index["splits"]["train"]["shards"][0]["count"]
        message = f"holds {count - 1} samples; its index says {count}"
    else:
        message = TAR_DAMAGE[case][1]
    files.rewrite_tar(tar_path, TAR_DAMAGE[case][0])
    assert _train(folder, tmp_path) == 2
    _one_line(capsys, message)


def test_a_truncated_or_garbage_tar_is_an_error_not_half_an_epoch(good, tmp_path, capsys):
    folder = tmp_path / "s"
    shutil.copytree(good, folder)
    tar_path, _ = _first(folder)
    data = tar_path.read_bytes()
    tar_path.write_bytes(data[: len(data) // 2])  # a copy that stopped half way
    assert _train(folder, tmp_path) == 2
    _one_line(capsys, f"damaged shard {tar_path}")
    tar_path.write_bytes(np.random.default_rng(0).bytes(5000))
    assert _train(folder, tmp_path) == 2
    _one_line(capsys, "not a readable tar")
    tar_path.unlink()
    assert _train(folder, tmp_path) == 2
    _one_line(capsys, "cannot be opened")


def test_a_member_larger_than_its_kind_allows_is_refused_from_its_header(tmp_path):
    """A tar member claiming 1 GiB is refused before a byte of it is read."""
    tar_path = tmp_path / "train-000000.tar"
    info = tarfile.TarInfo("000000000.u8")
    info.size = 2**30
    tar_path.write_bytes(info.tobuf(tarfile.USTAR_FORMAT) + bytes(4096))  # the header's claim, no GiB behind it
    with pytest.raises(shards.ShardDamaged, match="1,073,741,824 bytes; a .u8 here is at most 64"):
        list(shards.read_samples(str(tar_path), (1, 8, 8), 10))


INDEX_DAMAGE = {
    "path outside": (
        lambda ix: ix["splits"]["train"]["shards"][0].update(file="../../etc/passwd.tar"),
        "not a .tar file name",
    ),
    "absolute path": (lambda ix: ix["splits"]["train"]["shards"][0].update(file="/tmp/x.tar"), "not a .tar file name"),
    "count too high": (lambda ix: ix["splits"]["train"].update(count=10**6), "its count says 1000000"),
    "channels 7": (lambda ix: ix.update(channels=7), "'channels' is 7"),
    "no classes": (lambda ix: ix.update(classes=[]), "'classes' must be"),
    "size -1": (lambda ix: ix.update(input_size=-1), "'input_size' is -1"),
    "splits list": (lambda ix: ix.update(splits=[1]), "'splits' must map"),
}


@pytest.mark.parametrize("case", sorted(INDEX_DAMAGE))
def test_a_damaged_index_is_one_line(good, tmp_path, capsys, case):
    folder = tmp_path / "s"
    shutil.copytree(good, folder)
    index = json.loads((folder / "index.json").read_text())
    INDEX_DAMAGE[case][0](index)
    (folder / "index.json").write_text(json.dumps(index))
    assert _train(folder, tmp_path) == 2
    _one_line(capsys, INDEX_DAMAGE[case][1])


def test_labels_that_do_not_fit_their_split_are_one_line(good, tmp_path, capsys):
    folder = tmp_path / "s"
    shutil.copytree(good, folder)
    labels = np.load(folder / "labels-train.npy")
    np.save(folder / "labels-train.npy", labels[:-5])
    assert _train(folder, tmp_path) == 2
    _one_line(capsys, "labels, not the")
    labels[0] = 999
    np.save(folder / "labels-train.npy", labels)
    assert _train(folder, tmp_path) == 2
    _one_line(capsys, "a label is outside 0 … 9")


def test_a_server_answering_503_is_given_up_on_within_the_retry_time(good, tmp_path, monkeypatch):
    class Busy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(shards, "RETRY_SECONDS", 3.0)
    url = f"http://127.0.0.1:{server.server_address[1]}/train-000000.tar"
    started = time.monotonic()
    try:
        with pytest.raises(shards.ShardDamaged, match="the server answered 503"):
            list(shards.read_samples(url, (1, 8, 8), 10))
    finally:
        server.shutdown()
    assert time.monotonic() - started < 6
