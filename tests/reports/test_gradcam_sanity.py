"""cnnlab explain --sanity: the Grad-CAM maps of a trained net depend on its weights and find the
pixels its predictions rest on; a model that looks at the border is flagged."""

from __future__ import annotations

import json

import numpy as np

from cnnlab.cli import main
from cnnlab.inference.explain import border_share, curve_area, deletion_curve, map_similarity, randomised_copy


def test_sanity_on_a_small_run_passes_randomisation_on_every_image_and_deletion_beats_a_random_map(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(["train", "--data", "digits", "--model", "cnn", "--epochs", "3", "-q", "--no-report", "--out", str(run)])
        == 0
    )
    capsys.readouterr()
    assert main(["explain", str(run), "--sanity", "--images", "48"]) == 0
    out = capsys.readouterr().out
    res = json.loads((run / "explain" / "sanity.json").read_text())
    rows = res["images"]
    assert len(rows) == 48 and res["split"] == "test"
    test = json.loads((run / "split.json").read_text())["indices"]["test"][:48]
    assert [r["index"] for r in rows] == test
    # on every test image, re-initialised weights give a map less like the trained model's own
    assert all(r["similarity_randomised"] < r["similarity_trained"] for r in rows)
    assert res["overall"]["randomisation_passed"] == 1.0
    # the deletion curve falls faster with the trained model's map than with a random one
    mean = res["mean_curves"]
    assert curve_area(np.asarray(mean["grad-cam"])) < curve_area(np.asarray(mean["random map"]))
    assert res["overall"]["deletion_area"] < res["overall"]["deletion_area_random"]
    assert sum(b["images"] for b in res["per_class"].values()) == 48
    assert "lower on 100% of the images" in out and (run / "explain" / "sanity.png").is_file()
    assert res["looks_at_border"] == []  # digits sit in the middle of their images
    assert main(["report", str(run)]) == 0
    assert "Grad-CAM sanity" in (run / "report.html").read_text()
    # --out: the checks go to that folder and the run's own sanity.json is left as it was
    before = (run / "explain" / "sanity.json").stat().st_mtime_ns
    assert main(["explain", str(run), "--sanity", "--images", "8", "--out", str(tmp_path / "elsewhere")]) == 0
    assert json.loads((tmp_path / "elsewhere" / "sanity.json").read_text())["overall"]["images"] == 8
    assert (tmp_path / "elsewhere" / "sanity.png").is_file()
    assert (run / "explain" / "sanity.json").stat().st_mtime_ns == before
    (tmp_path / "a-file").write_text("x")
    assert main(["explain", str(run), "--sanity", "--out", str(tmp_path / "a-file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_the_pieces_on_hand_made_maps():
    import torch

    heat = np.zeros((20, 20))
    heat[:3, :] = 1  # all the heat on the top edge
    assert border_share(heat) == 1.0
    heat = np.zeros((20, 20))
    heat[8:12, 8:12] = 1
    assert border_share(heat) == 0.0
    assert map_similarity(heat, heat) == 1.0 and map_similarity(heat, np.zeros_like(heat)) == 0.0
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(2 * 400, 2))
    clone = randomised_copy(model)
    assert not torch.equal(clone[0].weight, model[0].weight) and model[0].weight.requires_grad
    x = torch.randn(1, 1, 20, 20)
    curve = deletion_curve(model.eval(), x, heat, 0)
    assert curve.shape == (9,) and curve.min() >= 0 and curve.max() <= 1
    with torch.no_grad():  # the first point is the untouched image, the last an image of zeros
        assert np.isclose(curve[0], torch.softmax(model(x), 1)[0, 0].item(), atol=1e-6)
        assert np.isclose(curve[-1], torch.softmax(model(torch.zeros_like(x)), 1)[0, 0].item(), atol=1e-6)


def test_a_model_that_reads_the_border_is_flagged_on_its_report(tmp_path, capsys):
    """Two classes told apart only by a bright left or right edge; the centre holds a blob of random
    brightness in both: the net must look at the border, and the sanity check says so."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (tmp_path / "edges" / f"c{c}").mkdir(parents=True)
        for i in range(100):
            im = rng.integers(0, 120, (32, 32)).astype(np.uint8)
            im[10:22, 10:22] = rng.integers(100, 255)
            im[:, :4] = 255 if c == 0 else im[:, :4]
            im[:, -4:] = 255 if c == 1 else im[:, -4:]
            Image.fromarray(im).save(tmp_path / "edges" / f"c{c}" / f"{i}.png")
    run = tmp_path / "run"
    flags = ["--model", "cnn", "--epochs", "3", "-q", "--no-report", "--on-leak", "off", "--out", str(run)]
    assert main(["train", "--data", str(tmp_path / "edges"), *flags]) == 0
    assert main(["explain", str(run), "--sanity"]) == 0
    assert "LOOKS AT THE BORDER: c0, c1" in capsys.readouterr().out
    res = json.loads((run / "explain" / "sanity.json").read_text())
    assert all(b["border_share"] >= res["border_area"] for b in res["per_class"].values())
    assert main(["report", str(run)]) == 0
    assert "Looks at the border: c0, c1" in (run / "report.html").read_text()
