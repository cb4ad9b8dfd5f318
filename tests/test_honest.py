"""Figures a user can trust and refusals before work (issue 10): the run's time split, parameter
counts per fine-tuning phase, metrics over the classes present, dataset names on tables, compare
pages that show what differs and mark unfinished runs, --max-pixels on every decoding command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image
from sklearn.metrics import f1_score

from cnnlab import api
from cnnlab.cli import main
from cnnlab.workflows.resolve import build_config
from tests.conftest import make_folder_dataset

SRC = str(Path(__file__).resolve().parents[1] / "src")


def folder_run(tmp_path: Path, name: str = "r", **extra):
    data = make_folder_dataset(tmp_path / "d", classes=4, per_class=10, size=32)
    cfg = build_config(
        None,
        {
            "data.source": str(data),
            "model.name": "cnn-small",
            "train.epochs": 2,
            "run.out": str(tmp_path / name),
            "run.report": False,
            **extra,
        },
    )
    return data, api.train(cfg, progress=False)


def test_a_frozen_run_reports_where_its_time_went(tmp_path):
    data = make_folder_dataset(tmp_path / "d", classes=3, per_class=8, size=32)
    res = api.train(
        build_config(
            None,
            {
                "data.source": str(data),
                "model.name": "efficientnet-lite0",
                "data.input_size": 32,
                "model.freeze": "backbone",
                "train.epochs": 2,
                "run.out": str(tmp_path / "r"),
            },
        ),
        progress=False,
    )
    info = json.loads((res.run / "run.json").read_text())
    parts = [info["data_seconds"], info["feature_cache"]["seconds"], info["train_seconds"], info["eval_seconds"]]
    assert all(p >= 0 for p in parts) and info["total_seconds"] == pytest.approx(sum(parts), abs=0.2)
    assert info["total_seconds"] > info["train_seconds"]
    page = (res.run / "report.html").read_text()
    assert "feature extraction seconds" in page and "evaluation seconds" in page and "run time" in page


def test_fine_tuning_records_trainable_counts_per_phase(tmp_path):
    data = make_folder_dataset(tmp_path / "d", classes=2, per_class=6, size=32)
    res = api.train(
        build_config(
            None,
            {
                "data.source": str(data),
                "model.name": "efficientnet-lite0",
                "data.input_size": 32,
                "model.fine_tune": [1, 1],
                "train.batch_size": 4,
                "run.out": str(tmp_path / "r"),
            },
        ),
        progress=False,
    )
    phases = json.loads((res.run / "run.json").read_text())["parameters"]["phases"]
    head = 1280 * 2 + 2
    assert phases[0] == {"epochs": "1-1", "trainable": head, "frozen": phases[0]["frozen"]}
    assert phases[1]["epochs"] == "2-2" and phases[1]["trainable"] > 3_000_000 and phases[1]["frozen"] == 0
    assert f"{phases[1]['trainable']:,}" in (res.run / "report.html").read_text()


def test_metrics_on_other_data_average_over_the_classes_it_has(tmp_path, capsys):
    data, res = folder_run(tmp_path)
    other = tmp_path / "other"
    shutil.copytree(data, other)
    shutil.rmtree(other / "class_3")
    m = api.evaluate(res.run, api.EvaluateSettings(data=[str(other)])).document()
    assert m["absent_classes"] == ["class_3"] and m["num_samples"] == 30
    preds = api.predict(res.run, sorted(other.rglob("*.png")))
    truth = [int(Path(p.path).parent.name[-1]) for p in preds]
    guess = [int(p.top[0].name[-1]) for p in preds]
    assert m["macro_f1"] == pytest.approx(f1_score(truth, guess, labels=[0, 1, 2], average="macro", zero_division=0))
    assert main(["evaluate", str(res.run), "--data", str(other)]) == 0
    assert "absent from this data: class_3" in capsys.readouterr().out


def test_unknown_classes_are_refused_before_any_decoding(tmp_path, capsys):
    from cnnlab.data.cache import cache_dir

    data, res = folder_run(tmp_path)
    other = make_folder_dataset(tmp_path / "zoo", classes=2, per_class=3, size=32)
    (other / "class_1").rename(other / "zebra")
    shutil.rmtree(cache_dir() / "decoded", ignore_errors=True)
    assert main(["evaluate", str(res.run), "--data", str(other)]) == 2
    assert "classes the model never saw: zebra" in capsys.readouterr().err
    assert not (cache_dir() / "decoded").exists()  # nothing was decoded


def test_refusing_an_existing_out_takes_under_two_seconds_on_2000_images(tmp_path, capsys):
    data = make_folder_dataset(tmp_path / "d", classes=4, per_class=500, size=16)
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "x").write_text("")
    import time

    started = time.perf_counter()
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "-q"]) == 2
    assert time.perf_counter() - started < 2.0
    assert "already exists" in capsys.readouterr().err


def test_the_retrieval_table_names_its_datasets(tmp_path, capsys):
    data, res = folder_run(tmp_path)
    other = make_folder_dataset(tmp_path / "other", classes=4, per_class=4, size=32, seed=3)
    assert main(["evaluate", str(res.run), "--data", str(data), "--data", str(other), "--retrieval"]) == 0
    out = capsys.readouterr().out
    header = out.split("retrieval mAP")[1].splitlines()[1]
    assert str(data) in header and str(other) in header


def test_compare_shows_what_differs_and_marks_unfinished_runs(tmp_path):
    _, a = folder_run(tmp_path, "a")
    b = api.train(
        build_config(
            None,
            {
                "data.source": str(tmp_path / "d"),
                "model.name": "cnn-small",
                "train.epochs": 2,
                "optim.lr": 0.01,
                "run.out": str(tmp_path / "b"),
                "run.report": False,
            },
        ),
        progress=False,
    )
    (b.run / "metrics.json").unlink()  # as if killed before it finished
    out = api.compare([a.run, b.run], tmp_path / "cmp.html")
    page = out.read_text()
    assert "<td>optim.lr</td><td>0.0030</td><td>0.0100</td>" in page  # a: the default recipe's peak
    assert "interrupted" in page and "<td>frozen backbone</td>" not in page and "<td>all layers</td>" in page


BIG = textwrap.dedent("""
    import resource, subprocess, sys
    proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(peak)
    print(proc.returncode)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
""")


@pytest.mark.slow  # 20 s of PNG writing and decoding: make test-slow
@pytest.mark.timeout(300)
def test_a_144_megapixel_png_decodes_within_its_budget_and_is_refused_by_default(tmp_path):
    _, res = folder_run(tmp_path)
    big = tmp_path / "big.png"
    img = Image.new("L", (12000, 12000), 200)  # grey: the same pixel count, a third of the bytes to write
    img.paste(20, (0, 0, 6000, 12000))
    img.save(big, compress_level=1)
    del img
    exe = [sys.executable, "-m", "cnnlab", "predict", str(res.run), str(big)]
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", BIG, *exe, "--max-pixels", "200000000"], capture_output=True, text=True, env=env
    )
    peak, rc, *lines = proc.stdout.splitlines()
    assert rc == "0" and len(lines) == 1 and lines[0].startswith(f"{big}: class_"), proc.stdout + proc.stderr
    assert int(peak) < 2 * 1024**3, f"peak RSS {int(peak) / 2**30:.2f} GiB"
    default = subprocess.run(exe, capture_output=True, text=True, env=env)
    assert default.returncode == 1 and "Traceback" not in default.stderr and "Warning" not in default.stderr
    assert default.stdout.strip() == (
        f"{big}: error: too many pixels: 12000×12000 = 144,000,000 pixels is over "
        "data.max_pixels = 50,000,000; raise it (--max-pixels) to decode such images"
    )


def test_pillows_own_bomb_limit_follows_max_pixels(tmp_path):
    """A header claiming 20,000 × 20,000 pixels (over Pillow's fixed 179 M refusal)."""
    import struct
    import zlib

    from cnnlab.data.images import decode_file, describe_error

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = tmp_path / "claims.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 100))
        + chunk(b"IEND", b"")
    )
    for budget, reason in ((50_000_000, "too many pixels: 20000×20000"), (500_000_000, "truncated")):
        with pytest.raises(Exception) as e:
            decode_file(path, 1, 16, budget)
        assert reason in describe_error(e.value)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # restored after use


def test_figures_stay_legible_with_multi_label_data_and_long_run_names(tmp_path, _legible_figures):
    """The conftest checks every figure drawn here (and in every other test, the 100 CIFAR-100
    classes of test_sources included): no text overlaps another or leaves its figure."""
    from tests.fixtures import csv_dataset

    many = api.train(
        build_config(
            None,
            {
                "data.source": "digits",
                "model.name": "cnn-small",
                "train.epochs": 1,
                "run.out": str(tmp_path / "a-run-with-a-rather-long-name-of-ten-classes"),
            },
        ),
        progress=False,
    )
    multi = api.train(
        build_config(
            None,
            {
                "data.source": str(csv_dataset(tmp_path / "ml", multilabel=True)),
                "model.name": "cnn-small",
                "train.epochs": 1,
                "run.out": str(tmp_path / "multi-label-run-of-four-tags"),
            },
        ),
        progress=False,
    )
    _, third = folder_run(tmp_path, "third")
    api.compare([many.run, multi.run, third.run], tmp_path / "cmp.html")
    api.explain(third.run, [tmp_path / "d" / "class_0" / "img_000.png"],
                api.ExplainSettings(target_class="class_1", out=str(tmp_path / "x")))  # fmt: skip
    assert (many.run / "report" / "confusion.png").is_file() and not _legible_figures


def test_pages_fit_a_1300_pixel_wide_browser(tmp_path):
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian's chromium is not installed (make test installs it when run as root)")
    from playwright.sync_api import sync_playwright

    data, a = folder_run(tmp_path, "a", **{"run.report": True})
    _, b = folder_run(tmp_path, "b", **{"model.name": "mlp"})
    cmp = api.compare([a.run, b.run], tmp_path / "cmp.html")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        widths = {}
        for html in (a.run / "report.html", cmp):
            page.goto(html.resolve().as_uri())
            page.wait_for_load_state("load")
            widths[html.name] = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        browser.close()
    assert all(scroll <= inner for scroll, inner in widths.values()), widths
