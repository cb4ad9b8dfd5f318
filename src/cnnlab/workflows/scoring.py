"""A run's model on data other than its own (classes matched by name, all images or one split of
the run's split settings), and seed 002's baseline: the pretrained net the run started from,
scored with its own output layer through a label map."""

from __future__ import annotations

import csv
import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.core.errors import CnnlabError
from cnnlab.core.textfiles import read_text_file
from cnnlab.data.files import list_files
from cnnlab.data.pipeline import PreparedData, prepare_data
from cnnlab.data.sources import DATASETS
from cnnlab.evaluate.metrics import mapped_topk
from cnnlab.evaluate.stats import accuracy_interval
from cnnlab.inference.predictor import Predictor
from cnnlab.models import get_spec
from cnnlab.models.factory import create_model
from cnnlab.models.ops import predict_logits
from cnnlab.models.pretrained import head_classes
from cnnlab.models.transfer import output_layer
from cnnlab.runs.data import load_run_data
from cnnlab.runs.ledger import record_test_scoring
from cnnlab.runs.store import RunFolder
from cnnlab.workflows.resolve import build_config

SPLITS = ("train", "val", "test")


def other_data(
    run: RunFolder,
    ckpt: dict[str, Any],
    data: str,
    progress: bool,
    data_dir: str | None = None,
    max_pixels: int | None = None,
) -> tuple[PreparedData, torch.Tensor]:
    """Another dataset decoded with the run's preprocessing and split with the run's split
    settings (fractions, seed), and its labels as the model's class indices."""
    cfg = run.read_config()
    pre = ckpt["preprocess"]
    dcfg = build_config(
        {
            "data": {
                **cfg.data.model_dump(),
                "source": data,
                "data_dir": data_dir,
                "input_size": pre["input_size"],
                "channels": pre["channels"],
                "train_per_class": None,
                "train_fraction": None,
                "max_pixels": max_pixels or cfg.data.max_pixels,
            },
            "model": cfg.model.model_dump(),
        }
    ).data
    if data not in DATASETS:  # the class names are known before any pixel is decoded
        check_classes(data, list_files(data, dcfg.image_root, dcfg.delimiter, dcfg.label_sep).classes, ckpt)
    other = prepare_data(dcfg, get_spec(cfg.model.name), dcfg.split_seed, progress=progress)
    check_classes(data, other.classes, ckpt)
    if other.multilabel != bool(ckpt.get("multilabel")):
        raise CnnlabError(f"dataset {data!r} is {'multi' if other.multilabel else 'single'}-label; the model is not")
    cols = [ckpt["classes"].index(c) for c in other.classes]
    if other.multilabel:
        labels = torch.zeros(len(other.labels), len(ckpt["classes"]), dtype=other.labels.dtype)
        labels[:, cols] = other.labels
    else:
        labels = torch.tensor(cols)[other.labels]
    return other, labels


def check_classes(data: str, classes: list[str], ckpt: dict[str, Any]) -> None:
    missing = [c for c in classes if c not in ckpt["classes"]]
    if missing:
        raise CnnlabError(f"dataset {data!r} has classes the model never saw: {', '.join(missing)}")


def split_indices(other: PreparedData, split: str | None) -> np.ndarray:
    """All images (``split`` None) or one split's indices."""
    if split is None:
        return np.arange(len(other.labels))
    if split not in SPLITS:
        raise CnnlabError(f"--split {split!r}: choose train, val or test")
    return np.asarray(other.splits[split])


# ------------------------------------------------------------------ seed 002's baseline


def read_label_map(path: str | Path | None, source: list[str], classes: list[str]) -> np.ndarray:
    """For each of the pretrained net's classes, the dataset class it stands for (-1: none).

    The file is CSV, one ``net class,dataset class`` per line (``#`` comments, an optional
    ``source,target`` header); a net class is its index, its full name, or one of its
    comma-separated synonyms when only one class has it (ImageNet's "jersey, T-shirt, tee shirt").
    Several net classes may map onto one dataset class. Without a file, net classes named like
    a dataset class (case and ``_`` aside) are mapped."""
    target = np.full(len(source), -1, dtype=np.int64)
    norm = [c.strip().lower().replace("_", " ") for c in classes]
    synonyms: dict[str, list[int]] = {}
    for i, name in enumerate(source):
        for s in {name.strip().lower(), *(part.strip().lower() for part in name.split(","))}:
            synonyms.setdefault(s.replace("_", " "), []).append(i)
    if path is None:
        for j, c in enumerate(norm):
            for i in synonyms.get(c, []):
                target[i] = j
        if (target < 0).all():
            raise CnnlabError(
                "--keep-head: no class of the pretrained net is named like a dataset class; "
                "give --label-map FILE (CSV lines: net class,dataset class)"
            )
        return target
    p = Path(path)
    try:
        rows = list(csv.reader(read_text_file(p, "--label-map", 16 << 20).splitlines()))
    except csv.Error as e:
        raise CnnlabError(f"--label-map {str(p)!r} is not a CSV file cnnlab can read ({e})") from None
    first = True
    for line, row in enumerate(rows, 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        header, first = first and [c.strip().lower() for c in row] == ["source", "target"], False
        if header:
            continue
        if len(row) != 2:
            raise CnnlabError(
                f"--label-map {str(p)!r} line {line}: expected 'net class,dataset class' (quote names with commas)"
            )
        net, ours = row[0].strip(), row[1].strip()
        if ours.lower().replace("_", " ") not in norm:
            raise CnnlabError(
                f"--label-map {str(p)!r} line {line}: {ours!r} is not a class of the data ({', '.join(classes)})"
            )
        target[_net_class(net, source, synonyms, f"--label-map {str(p)!r} line {line}")] = norm.index(
            ours.lower().replace("_", " ")
        )
    if (target < 0).all():
        raise CnnlabError(f"--label-map {str(p)!r} maps no class")
    return target


def _net_class(net: str, source: list[str], synonyms: dict[str, list[int]], where: str) -> int:
    """The index of the net class ``net`` names: an index, the full name as written (ImageNet's
    "cardigan" is not its "Cardigan" corgi), or a synonym only one class has."""
    if net.isdigit() and int(net) < len(source):
        return int(net)
    if source.count(net) == 1:
        return source.index(net)
    hits = synonyms.get(net.lower(), [])
    if len(hits) == 1:
        return hits[0]
    near = difflib.get_close_matches(net.lower(), list(synonyms), n=3)
    why = f"names {len(hits)} of the net's classes" if hits else "is not one of the net's classes"
    raise CnnlabError(
        f"{where}: {net!r} {why}" + (f" (close: {', '.join(near)})" if near else "") + "; give its index or full name"
    )


def evaluate_keep_head(
    run_path: str | Path,
    label_map: str | Path | None = None,
    data: str | Sequence[str] | None = None,
    split: str | None = None,
    batch_size: int = 256,
    device: str = "auto",
    progress: bool = True,
    max_pixels: int | None = None,
) -> list[dict[str, Any]]:
    """Seed 002's baseline: the pretrained net a run started from (its model and weights, before
    any training), scored with its own output layer on the run's ``split`` (default test) or on
    other datasets (all images, or ``split`` of each). A prediction counts as the dataset class
    its net class maps onto (:func:`read_label_map`); one of an unmapped class is wrong.

    Returns:
        For one dataset: top1 and top5 (value and Wilson 95 % interval), images, how many top-1
        predictions fell on a mapped class, per-class top-1, and the map's size; for several,
        ``baselines``, one such dict each (the net is built once)."""
    run = RunFolder(run_path).require()
    trained = Predictor.from_run(run, device, warn=False)
    cfg = run.read_config()
    if trained.multilabel:
        raise CnnlabError("--keep-head scores single-label data; this run is multi-label")
    if "keep_head" not in get_spec(cfg.model.name).options():
        raise CnnlabError(
            f"--keep-head needs a pretrained net (efficientnet-lite*, timm/…, tv/…); run {str(run.path)!r} is "
            f"{cfg.model.name!r}, which has no pretrained output layer"
        )
    pre = trained.ckpt["preprocess"]
    opts = {"pretrained": True, "weights": cfg.model.weights, "keep_head": True}
    model = create_model(cfg.model.name, len(trained.classes), pre["channels"], pre["input_size"], **opts)
    source = head_classes(cfg.model.name, output_layer(model).out_features, cfg.model.weights)
    target = read_label_map(label_map, source, trained.classes)
    net = Predictor(model.to(trained.device).eval(), {**trained.ckpt, "classes": source}, trained.device)
    many = [data] if isinstance(data, str) or data is None else list(data)
    results = []
    for name in many:
        if name is None:
            where = split or "test"
            prepared = load_run_data(run, cfg, progress)
            images, labels, idx = prepared.images, prepared.labels, split_indices(prepared, where)
            if where == "test":
                record_test_scoring(run, "evaluate --keep-head")
        else:
            where = split or "all"
            other, labels = other_data(run, trained.ckpt, name, progress, max_pixels=max_pixels)
            images, idx = other.images, split_indices(other, split)
        if not len(idx):
            raise CnnlabError(f"{name or 'the run'}'s {where} split has no images")
        logits, y = predict_logits(net.model, net.batches(images, labels, idx, batch_size))
        scores = mapped_topk(logits.numpy(), target, y.numpy(), len(trained.classes), k=min(5, len(source)))
        n = len(idx)
        results.append(
            {
                "baseline": f"{cfg.model.name} with its own {len(source)}-class output layer",
                "data": name or str(run.path),
                "split": where,
                "images": n,
                "top1": {"value": scores["top1"], "ci95": accuracy_interval(round(scores["top1"] * n), n)},
                "top5": {
                    "value": scores["topk"],
                    "ci95": accuracy_interval(round(scores["topk"] * n), n),
                    "k": scores["k"],
                },
                "mapped_top1": scores["mapped"],
                "per_class_top1": dict(zip(trained.classes, scores["per_class"], strict=True)),
                "net_classes_mapped": int((target >= 0).sum()),
                "dataset_classes_mapped": sorted({trained.classes[t] for t in target if t >= 0}),
                "label_map": str(label_map) if label_map else "by name",
            }
        )
    return results
