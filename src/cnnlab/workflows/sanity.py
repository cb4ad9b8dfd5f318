"""`cnnlab explain RUN --sanity`: can the run's Grad-CAM maps be trusted? On the run's own test
images: the model-randomisation check, the deletion curve against a random map, and the share of
the heat on the image's border; per class, into RUN/explain/sanity.json and sanity.png."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.core.atomic import atomic_write_json
from cnnlab.core.errors import CnnlabError
from cnnlab.core.results import Explained, SanityReport
from cnnlab.core.run_settings import ExplainSettings
from cnnlab.evaluate import plots
from cnnlab.inference.explain import (
    BORDER,
    DELETION_STEPS,
    border_share,
    curve_area,
    deletion_curve,
    grad_cam,
    last_conv,
    map_similarity,
    randomised_copy,
)
from cnnlab.inference.predictor import Predictor
from cnnlab.runs.data import load_run_data
from cnnlab.runs.store import RunFolder
from cnnlab.workflows.evaluation import explain

log = logging.getLogger(__name__)

NOISE = 0.05  # the input noise (in normalised units) of the trained model's own stability baseline
BORDER_AREA = 1 - (1 - 2 * BORDER) ** 2  # the ring's share of the area: a uniform map puts this much there


def explain_sanity(
    run_path: str | Path, settings: ExplainSettings | None = None, progress: bool = True
) -> SanityReport:
    """Check the run's Grad-CAM on up to ``settings.sanity_images`` of its test images (validation when
    it has no test split):

    - **model randomisation**: the Spearman correlation of each map with the map of the same
      architecture with re-initialised weights, beside the trained model's own stability (its map
      of the image with a little noise added); a map that survives randomisation shows the image's
      edges, not what the model learned.
    - **deletion**: the predicted class's probability as the hottest pixels are removed, against
      the same for a random map; a faster fall (a smaller area) means the map found what the
      prediction rests on.
    - **border**: the heat's share in the outer ring (15 % of each side); at or above the ring's
      51 % of the area, the model looks at the edges or background rather than a centred object.

    sanity.json and sanity.png go to ``settings.out`` (a folder), else to RUN/explain (the report shows them)."""
    st = settings or ExplainSettings()
    images, device, seed, out = st.sanity_images, st.device, st.seed, st.out
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise CnnlabError(f"--out {str(out)!r} is a file: --sanity writes sanity.json and sanity.png into a folder")
    run = RunFolder(run_path).require()
    predictor = Predictor.from_run(run, device)
    if predictor.multilabel:
        raise CnnlabError("--sanity checks single-label runs' Grad-CAM (one predicted class per image)")
    model = predictor.model
    last_conv(model)
    data = load_run_data(run, run.read_config(), progress, leaks=False)
    split = "test" if len(data.splits["test"]) else "val"
    idx = np.asarray(data.splits[split][:images])
    rnd = randomised_copy(model, seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    curves: dict[str, list[np.ndarray]] = {"grad-cam": [], "random map": []}
    for x, y in predictor.batches(data.images, data.labels, idx, 32):
        with torch.no_grad():
            pred = model(x).argmax(1).tolist()
        heat = grad_cam(model, x, pred)
        noisy = x + NOISE * torch.randn(x.shape, generator=gen).to(x.device)
        heat_again = grad_cam(model, noisy, pred)
        heat_random = grad_cam(rnd, x, pred)
        for j in range(len(x)):
            cam_curve = deletion_curve(model, x[j : j + 1], heat[j], pred[j])
            rand_curve = deletion_curve(model, x[j : j + 1], rng.random(heat[j].shape), pred[j])
            curves["grad-cam"].append(cam_curve)
            curves["random map"].append(rand_curve)
            rows.append(
                {
                    "index": int(idx[len(rows)]),
                    "class": data.classes[int(y[j])],
                    "predicted": data.classes[pred[j]],
                    "similarity_trained": round(map_similarity(heat[j], heat_again[j]), 4),
                    "similarity_randomised": round(map_similarity(heat[j], heat_random[j]), 4),
                    "deletion_area": round(curve_area(cam_curve), 4),
                    "deletion_area_random": round(curve_area(rand_curve), 4),
                    "border_share": round(border_share(heat[j]), 4),
                }
            )
    result = _summary(rows, split, curves)
    result["files"] = _save(run, out, result, curves, rows)
    return SanityReport.model_validate(result)


def _save(run: RunFolder, out: str | Path | None, result: dict[str, Any], curves: dict[str, list[np.ndarray]],
          rows: list[dict[str, Any]]) -> list[str]:  # fmt: skip
    """sanity.json and sanity.png into ``out`` (the run's own explain/ left as it was), else into
    RUN/explain through the run folder's writer; their paths."""

    def write(folder: Path) -> None:
        atomic_write_json(folder / "sanity.json", result)
        plots.plot_deletion(
            DELETION_STEPS, {k: np.mean(v, 0) for k, v in curves.items()}, folder / "sanity.png",
            [r["similarity_trained"] for r in rows], [r["similarity_randomised"] for r in rows],
        )  # fmt: skip

    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write(Path(out))
    else:
        with run.artifacts("explain", merge=True) as scratch:
            write(scratch)
    return [str(Path(out or run.path / "explain") / n) for n in ("sanity.json", "sanity.png")]


def _summary(rows: list[dict[str, Any]], split: str, curves: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    def block(part: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "images": len(part),
            "similarity_trained": round(float(np.mean([r["similarity_trained"] for r in part])), 4),
            "similarity_randomised": round(float(np.mean([r["similarity_randomised"] for r in part])), 4),
            "randomisation_passed": round(
                float(np.mean([r["similarity_randomised"] < r["similarity_trained"] for r in part])), 4
            ),
            "deletion_area": round(float(np.mean([r["deletion_area"] for r in part])), 4),
            "deletion_area_random": round(float(np.mean([r["deletion_area_random"] for r in part])), 4),
            "deletion_faster": round(float(np.mean([r["deletion_area"] < r["deletion_area_random"] for r in part])), 4),
            "border_share": round(float(np.mean([r["border_share"] for r in part])), 4),
        }

    classes = sorted({r["class"] for r in rows})
    per_class = {c: block([r for r in rows if r["class"] == c]) for c in classes}
    return {
        "split": split,
        "method": {
            "randomisation": "Spearman correlation of Grad-CAM maps: trained vs re-initialised weights, beside "
            f"trained vs trained on the image plus N(0, {NOISE}) noise (Adebayo et al. 2018)",
            "deletion": "probability of the predicted class as the hottest pixels are set to the mean, "
            "area under the curve over the share removed, against a random map (Petsiuk et al. 2018)",
            "border": f"share of the heat in the outer {BORDER:.0%} of each side; the ring is {BORDER_AREA:.0%} "
            "of the area",
        },
        "deletion_steps": list(DELETION_STEPS),
        "mean_curves": {k: np.mean(v, 0).round(4).tolist() for k, v in curves.items()},
        "overall": block(rows),
        "per_class": per_class,
        "looks_at_border": [c for c, b in per_class.items() if b["border_share"] >= BORDER_AREA],
        "border_area": round(BORDER_AREA, 4),
        "images": rows,
    }


def explain_run(
    run_path: str | Path, images: Sequence[str], settings: ExplainSettings | None = None, progress: bool = True
) -> Explained:
    """`cnnlab explain`: with ``settings.sanity`` the checks of :func:`explain_sanity` on the run's test
    images, and for any ``images`` their Grad-CAM, filters and feature maps
    (:func:`cnnlab.workflows.evaluation.explain`)."""
    st = settings or ExplainSettings()
    if not st.sanity and not images:
        raise CnnlabError("explain needs IMAGE files, or --sanity to check the run's heat maps on its test images")
    checks = explain_sanity(run_path, st, progress) if st.sanity else None
    return Explained(sanity=checks, images=explain(run_path, images, st) if images else [])
