"""A corpus of bad and awkward files never crashes training or inspect; each is reported with its reason."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab import api
from cnnlab.data.images import decode_file
from cnnlab.data.inspect import inspect_dataset
from cnnlab.workflows.resolve import build_config
from tests.conftest import class_image
from tests.fixtures import jpeg_bytes

SRC = str(Path(__file__).resolve().parents[2] / "src")


def build_corpus(root: Path) -> dict[str, str]:
    """Two classes of good images plus every kind of bad file; returns {bad file: expected reason}."""
    rng = np.random.default_rng(0)
    for c in range(2):
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(10):
            Image.fromarray(class_image(c, 24, rng)).save(d / f"good_{i}.png")
    a, b = root / "class_0", root / "class_1"
    rgb = class_image(0, 40, rng)
    # awkward but readable
    Image.fromarray(rgb).convert("CMYK").save(a / "cmyk.jpg")
    Image.fromarray((np.arange(400).reshape(20, 20) * 150).astype(np.uint16)).save(a / "deep16.png")
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(a / "palette_transparency.png", transparency=0)
    Image.fromarray(rgb[:1, :1]).save(b / "one_pixel.png")
    Image.fromarray(rgb).save(b / "really_png.jpg", format="PNG")  # wrong extension
    # unreadable
    data = jpeg_bytes(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (a / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (a / "zero.png").write_bytes(b"")
    (b / "text.png").write_text("definitely not a PNG\n")
    Image.new("L", (10000, 10000)).save(b / "bomb.png", optimize=True)  # 100 M pixels, a few KB
    (b / "locked.png").write_bytes((b / "good_0.png").read_bytes())
    os.chmod(b / "locked.png", 0)
    os.symlink(b / "nowhere.png", b / "dangling.png")
    os.mkfifo(b / "fifo.png")
    return {
        "class_0/truncated.jpg": "truncated",
        "class_0/zero.png": "empty file (0 bytes)",
        "class_1/text.png": "not an image",
        "class_1/bomb.png": "too many pixels",
        "class_1/locked.png": "permission denied",
        "class_1/dangling.png": "broken symbolic link",
        "class_1/fifo.png": "not a regular file",
    }


# As root, file permissions do not apply; dropping the capabilities that bypass them makes
# the locked file really unreadable, as it is for everyone else.
DROP_CAPS = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def run_py(code: str, *args: str) -> subprocess.CompletedProcess:
    if DROP_CAPS and not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: cannot make a file unreadable")
    return subprocess.run(
        DROP_CAPS + [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )


INSPECT = """
import json, sys
from cnnlab.workflows.resolve import build_config
from cnnlab.data.inspect import inspect_dataset
cfg = build_config(None, {"data.source": sys.argv[1]}).data
print(json.dumps(inspect_dataset(cfg, out=sys.argv[2], progress=False).document()))
"""

TRAIN = """
import json, sys
from cnnlab import api
from cnnlab.workflows.resolve import build_config
cfg = build_config(None, {"data.source": sys.argv[1], "model.name": "cnn", "train.epochs": 1,
                          "data.input_size": 16, "run.out": sys.argv[2], "data.cache": sys.argv[3],
                          "run.report": False})
res = api.train(cfg, progress=False)
print(json.dumps({"accuracy": res.metrics["accuracy"]}))
"""


def test_inspect_reports_every_bad_file_with_its_reason(tmp_path):
    expected = build_corpus(tmp_path / "corpus")
    proc = run_py(INSPECT, str(tmp_path / "corpus"), str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    reasons = {u["path"]: u["reason"] for u in report["unreadable"]}
    assert set(reasons) == set(expected)
    for path, why in expected.items():
        assert why in reasons[path], (path, reasons[path])
    assert report["num_readable"] == 25
    assert report["extension_mismatch"] == ["class_1/really_png.jpg"]
    assert report["modes"]["CMYK"] == 1 and report["modes"]["P"] == 1
    assert (tmp_path / "out" / "samples.png").stat().st_size > 0


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_training_skips_bad_files_by_name(tmp_path, cache):
    expected = build_corpus(tmp_path / "corpus")
    proc = run_py(TRAIN, str(tmp_path / "corpus"), str(tmp_path / "run"), cache)
    assert proc.returncode == 0, proc.stderr
    for path in expected:
        assert path in proc.stderr  # the log names every skipped file
    summary = json.loads((tmp_path / "run" / "dataset.json").read_text())
    assert {s["path"] for s in summary["skipped"]} == set(expected)
    assert summary["num_images"] == 25


def test_huge_jpeg_is_decoded_downscaled_within_the_budget(tmp_path):
    path = tmp_path / "clipart.jpg"
    big = Image.new("L", (10000, 16000), 200)  # real clip art comes this large
    big.paste(0, (0, 0, 5000, 8000))
    big.save(path, quality=70)
    del big
    arr, mode = decode_file(path, channels=1, size=32, max_pixels=50_000_000)
    assert arr.shape == (1, 32, 32) and arr[0, 0, 0] < 30 and arr[0, -1, -1] > 170
    with pytest.raises(ValueError, match="over data.max_pixels"):
        decode_file(path, channels=1, size=32, max_pixels=1_000_000)  # even 1/8 scale is over this budget


def test_pixel_limit_is_a_setting(tmp_path):
    p = tmp_path / "wide.png"
    Image.new("RGB", (3000, 2000), "white").save(p)
    with pytest.raises(ValueError, match="6,000,000 pixels is over data.max_pixels = 5,000,000"):
        decode_file(p, 3, 16, max_pixels=5_000_000)
    assert decode_file(p, 3, 16, max_pixels=6_000_000)[0].shape == (3, 16, 16)
    assert build_config(None, {"data.max_pixels": 6_000_000}).data.max_pixels == 6_000_000


def test_inspect_in_process_and_training_with_cmyk_16bit_palette(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "odd"
    for c in range(2):
        (root / f"k{c}").mkdir(parents=True)
        for i in range(6):
            arr = class_image(c, 20, rng)
            Image.fromarray(arr).convert("CMYK").save(root / f"k{c}" / f"cmyk{i}.jpg")
            Image.fromarray(arr[:, :, 0].astype(np.uint16) * 257).save(root / f"k{c}" / f"deep{i}.png")
    rep = inspect_dataset(build_config(None, {"data.source": str(root)}).data, progress=False)
    assert rep.unreadable == [] and rep.num_readable == 24
    res = api.train(
        build_config(
            None, {"data.source": str(root), "model.name": "mlp", "train.epochs": 1, "run.out": str(tmp_path / "r")}
        ),
        progress=False,
    )
    assert res.metrics["num_samples"] > 0
