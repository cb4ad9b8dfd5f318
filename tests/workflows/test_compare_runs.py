"""`cnnlab compare RUN_A RUN_B`: runs that differ only in --seed share their test split and are
compared by paired tests; runs tested on other images are shown side by side, not paired."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.evaluate.stats import mcnemar_exact

FLAGS = ["--data", "digits", "--model", "mlp", "--hidden", "32", "--epochs", "2", "-q", "--no-report"]


def test_runs_differing_only_in_seed_share_their_test_images_and_are_paired(tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main(["train", *FLAGS, "--seed", "0", "--out", str(a)]) == 0
    assert main(["train", *FLAGS, "--seed", "1", "--out", str(b)]) == 0
    assert main(["train", *FLAGS, "--seed", "0", "--split-seed", "7", "--out", str(c)]) == 0
    split_a, split_b, split_c = (json.loads((r / "split.json").read_text())["indices"] for r in (a, b, c))
    assert split_a["test"] == split_b["test"] and split_a["test"] != split_c["test"]
    capsys.readouterr()

    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "ab.html")]) == 0
    out = capsys.readouterr().out
    assert f"paired on the same {len(split_a['test'])} test images" in out
    assert "McNemar exact p = " in out and "95 % interval" in out and "smallest difference this test size" in out
    assert (tmp_path / "ab.html").is_file()
    assert main(["compare", str(a), str(b), "--json", "--out", str(tmp_path / "ab2.html")]) == 0
    res = json.loads(capsys.readouterr().out)
    p = res["paired"]
    assert p["accuracy_ci95"][0] <= p["accuracy_difference"] <= p["accuracy_ci95"][1]
    preds = [np.load(r / "predictions.npz") for r in (a, b)]
    right = [
        pr["probs"][np.argsort(pr["indices"])].argmax(1) == pr["labels"][np.argsort(pr["indices"])] for pr in preds
    ]
    assert p["mcnemar"] == mcnemar_exact(right[0], right[1])  # the same images, paired one by one
    metrics = [json.loads((r / "metrics.json").read_text()) for r in (a, b)]
    assert abs(p["accuracy_a"] - metrics[0]["accuracy"]) < 1e-9 and abs(p["accuracy_b"] - metrics[1]["accuracy"]) < 1e-9

    assert main(["compare", str(a), str(c), "--out", str(tmp_path / "ac.html")]) == 0
    io = capsys.readouterr()
    assert "not paired: the runs were tested on different images" in io.err and "McNemar" not in io.out
    assert (tmp_path / "ac.html").is_file()


def test_a_damaged_run_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys):
    import shutil

    a = tmp_path / "a"
    assert main(["train", *FLAGS, "--out", str(a)]) == 0
    for name, damage in (("pickled", None), ("split", '{"indices": 3}'), ("nofp", None)):
        bad = tmp_path / name
        shutil.copytree(a, bad)
        if name == "pickled":  # a pickle where the predictions should be: refused, never loaded
            import pickle

            (bad / "predictions.npz").write_bytes(pickle.dumps({"probs": [1]}))
        elif name == "split":
            (bad / "split.json").write_text(damage)
        else:
            split = json.loads((bad / "split.json").read_text())
            del split["fingerprint"]
            (bad / "split.json").write_text(json.dumps(split))
        capsys.readouterr()
        page = tmp_path / f"{name}.html"
        assert main(["compare", str(a), str(bad), "--out", str(page)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and str(bad) in err, err
        assert not page.exists()


def test_runs_that_decode_the_same_images_differently_are_still_paired(tmp_path, capsys):
    """A grey small CNN against an RGB net at another size (seed 000's dense/CNN vs a pretrained
    net): the same test images, decoded two ways, are paired; other files are not."""
    from tests.conftest import make_folder_dataset

    data = make_folder_dataset(tmp_path / "d", classes=3, per_class=20, size=24)
    a, b = tmp_path / "grey16", tmp_path / "rgb24"
    common = ["--data", str(data), "--model", "cnn", "--epochs", "1", "-q", "--no-report"]
    assert main(["train", *common, "--input-size", "16", "--channels", "1", "--out", str(a)]) == 0
    assert main(["train", *common, "--input-size", "24", "--channels", "3", "--out", str(b)]) == 0
    fp = [json.loads((r / "split.json").read_text()) for r in (a, b)]
    assert fp[0]["fingerprint"] != fp[1]["fingerprint"] and fp[0]["images"] == fp[1]["images"]
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "ab.html")]) == 0
    assert "paired on the same 6 test images" in capsys.readouterr().out
    (data / "class_0" / "img_000.png").write_bytes((data / "class_1" / "img_000.png").read_bytes())  # other pixels
    c = tmp_path / "changed"
    assert main(["train", *common, "--input-size", "16", "--channels", "1", "--out", str(c)]) == 0
    assert main(["compare", str(a), str(c), "--out", str(tmp_path / "ac.html")]) == 0
    assert "not paired: the runs were tested on different images" in capsys.readouterr().err


def test_two_runs_image_by_image_kappa_only_one_right_and_the_averaged_ensemble(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", *FLAGS, "--seed", "0", "--out", str(a)]) == 0
    assert (
        main(["train", "--data", "digits", "--model", "cnn", "--epochs", "1", "-q", "--no-report", "--out", str(b)])
        == 0
    )
    capsys.readouterr()
    page = tmp_path / "ab.html"
    assert main(["compare", str(a), str(b), "--json", "--out", str(page)]) == 0
    g = json.loads(capsys.readouterr().out)["agreement"]
    # by hand, from the saved predictions
    pa, pb = (np.load(r / "predictions.npz") for r in (a, b))
    oa, ob = np.argsort(pa["indices"]), np.argsort(pb["indices"])
    y, qa, qb, idx = pa["labels"][oa], pa["probs"][oa], pb["probs"][ob], pa["indices"][oa]
    ra, rb = qa.argmax(1) == y, qb.argmax(1) == y
    assert g["agreement"] == [
        [int((ra & rb).sum()), int((ra & ~rb).sum())],
        [int((~ra & rb).sum()), int((~ra & ~rb).sum())],
    ]
    assert g["only_a"] == idx[ra & ~rb].tolist() and g["only_b"] == idx[~ra & rb].tolist()
    assert g["only_a"] + g["only_b"]  # the two nets differ on some images: the thumbnails have something to show
    n, agree = len(y), float((qa.argmax(1) == qb.argmax(1)).mean())
    k = qa.shape[1]
    chance = sum(float((qa.argmax(1) == c).mean() * (qb.argmax(1) == c).mean()) for c in range(k))
    assert g["kappa"] == pytest.approx((agree - chance) / (1 - chance), abs=1e-9)
    assert g["oracle_accuracy"] == pytest.approx(float((ra | rb).mean()))
    ens = ((qa + qb) / 2).argmax(1) == y
    assert g["ensemble_accuracy"] == pytest.approx(float(ens.mean()))
    m = int(ens.sum())  # the Wilson interval by its formula
    z, p = 1.959963984540054, m / n
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n),
    )
    assert g["ensemble_ci95"] == pytest.approx([centre - half, centre + half], abs=1e-9)
    html = page.read_text()
    assert "Cohen&#x27;s κ" in html or "Cohen's κ" in html
    assert html.count("data:image/png;base64") >= 2 + min(30, len(g["only_a"])) + min(30, len(g["only_b"]))
    assert main(["compare", str(a), str(b), "--out", str(page)]) == 0
    out = capsys.readouterr().out
    assert f"Cohen's κ {g['kappa']:.3f}" in out and f"accuracy {g['ensemble_accuracy']:.4f}  95 % interval" in out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    flags = ["--data", "digits", "--model", "mlp", "--hidden", "16", "--epochs", "1", "-q", "--no-report"]
    for seed in (0, 1):
        assert main(["train", *flags, "--seed", str(seed), "--out", str(root / f"r{seed}")]) == 0
    return root


def _hostile(two_runs, tmp_path, name, **arrays):
    import shutil

    run = tmp_path / name
    shutil.copytree(two_runs / "r1", run)
    saved = dict(np.load(run / "predictions.npz"))
    np.savez_compressed(run / "predictions.npz", **{**saved, **arrays})
    return run


# a child that runs one cnnlab command and writes its own peak resident memory (kB) to a file
PEAK = (
    "import resource, sys\nfrom cnnlab.cli import main\nrc = main(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\nsys.exit(rc)\n"
)


def _compare_in_child(tmp_path, a, b, name):
    import subprocess
    import sys

    peak = tmp_path / f"{name}.peak"
    argv = [sys.executable, "-c", PEAK, str(peak), "compare", str(a), str(b), "--out", str(tmp_path / f"{name}.html")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    return done, int(peak.read_text()) / 1024


def test_a_hostile_predictions_npz_is_refused_in_one_line_and_bounded_memory(two_runs, tmp_path):
    """A 2 MB file holding a compressed 30,000 × 10,000 array (1.2 GB) is refused from its header: the
    command's peak memory is that of comparing two ordinary runs (it was 2.95 GB); all-NaN probabilities,
    labels out of range and another class count are refused too, each in one line."""
    n = len(np.load(two_runs / "r1" / "predictions.npz")["indices"])
    cases = {
        "huge": {"probs": np.zeros((30_000, 10_000), np.float32), "indices": np.arange(30_000),
                 "labels": np.zeros(30_000, np.int64)},
        "nan": {"probs": np.full((n, 10), np.nan, np.float32)},
        "labels": {"labels": np.full(n, 99, np.int64)},
        "classes": {"probs": np.full((n, 3), 1 / 3, np.float32)},
    }  # fmt: skip
    done, ordinary = _compare_in_child(tmp_path, two_runs / "r0", two_runs / "r1", "ordinary")
    assert done.returncode == 0, done.stderr[-500:]
    for name, arrays in cases.items():
        run = _hostile(two_runs, tmp_path, name, **arrays)
        done, peak = _compare_in_child(tmp_path, two_runs / "r0", run, name)
        err = done.stderr.strip()
        assert done.returncode == 2 and len(err.splitlines()) == 1 and "predictions.npz" in err, (name, err[-500:])
        assert "Traceback" not in err and not (tmp_path / f"{name}.html").exists(), name
        assert peak <= ordinary + 100, (name, peak, ordinary)
