"""`cnnlab export`: a run's best checkpoint → ONNX or TorchScript with its classes and
preprocessing inside, proven to predict like the PyTorch model on the run's own test images."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import nn

from cnnlab import __version__
from cnnlab.core.errors import CnnlabError, DiskError
from cnnlab.core.run_settings import ExportSettings
from cnnlab.inference.exported import META_KEY, META_VERSION, ExportedModel, record_own_export
from cnnlab.inference.predictor import Predictor
from cnnlab.inference.preprocess import Preprocess
from cnnlab.runs.data import load_run_data
from cnnlab.runs.store import RunFolder
from cnnlab.workflows.resolve import data_problem

log = logging.getLogger(__name__)
RANDOM_CHECK_IMAGES = 256  # when the run's own images are not on this machine

OPSET = 18  # pinned: the ONNX opset every export uses
FORMATS = {"onnx": ".onnx", "torchscript": ".ts"}
PARITY_BATCHES = (1, 2, 64)
SMALL_BATCH_IMAGES = 256  # batch 1 and 2 are checked on the first images; batch 64 on all


class WithPreprocessing(nn.Module):
    """uint8 (N, C, S, S) pixels in, logits out: the training loader's normalisation in the graph."""

    def __init__(self, model: nn.Module, pre: Preprocess):
        super().__init__()
        self.model, self.mode = model, pre.normalize
        std = torch.tensor(pre.std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", torch.tensor(pre.mean, dtype=torch.float32).view(1, -1, 1, 1) / std)
        self.floor = 1.0 / float(pre.channels * pre.input_size**2) ** 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.mode == "mean-std":
            x = x * self.scale - self.shift
        else:
            x = x / 255.0
            if self.mode == "per-image":
                mean = x.mean(dim=(1, 2, 3), keepdim=True)
                std = ((x - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(self.floor)
                x = (x - mean) / std
        return self.model(x)


def metadata(predictor: Predictor, folder: RunFolder, fmt: str, with_preprocessing: bool) -> dict[str, Any]:
    """What travels inside the exported file (JSON): enough to predict with it and no side file."""
    pre = predictor.preprocess
    metrics = folder.headline_metrics()
    versions = {"cnnlab": __version__, "torch": torch.__version__}
    if fmt == "onnx":
        import onnx

        versions.update(onnx=onnx.__version__, opset=OPSET)
    return {
        "format_version": META_VERSION,
        "model": predictor.ckpt["config"]["model"]["name"],
        "classes": predictor.classes,
        "multilabel": predictor.multilabel,
        "thresholds": predictor.thresholds,
        "preprocess": pre.to_dict(),
        "input": {
            "name": "images",
            "dtype": "uint8" if with_preprocessing else "float32",
            "layout": "NCHW",
            "channels": pre.channels,
            "size": pre.input_size,
            "batch": "dynamic",
            "normalized_in_graph": with_preprocessing,
        },
        "output": {
            "name": "logits",
            "probabilities": "sigmoid" if predictor.multilabel else "softmax",
            "temperature": predictor.temperature,  # softmax(logits / T): the run's --calibrate temperature
        },
        "metrics": metrics,
        "run": folder.path.resolve().name,  # the run's name, not where it lay on the training machine
        "epoch": predictor.epoch,
        "weights": predictor.weights,
        "versions": versions,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _write_onnx(module: nn.Module, example: torch.Tensor, meta: dict[str, Any], path: Path) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401  (the torch.export-based exporter needs it)
    except ImportError as e:
        raise CnnlabError(f"ONNX export needs the {e.name} package: pip install onnx onnxscript onnxruntime") from None
    import warnings

    batch = torch.export.Dim("batch", min=1, max=65536)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter prints steps
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: batch},),
            opset_version=OPSET,
            verbose=False,
        )
    if program is None:
        raise CnnlabError("the ONNX exporter returned nothing")
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {META_KEY: json.dumps(meta)})
    onnx.save_model(proto, str(path))


def _write_torchscript(module: nn.Module, example: torch.Tensor, meta: dict[str, Any], path: Path) -> None:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={f"{META_KEY}.json": json.dumps(meta)})
    record_own_export(path)  # this machine's cnnlab opens it without --trust-torchscript


def parity(exported: ExportedModel, predictor: Predictor, images: np.ndarray, split: str) -> dict[str, Any]:
    """The exported model against the PyTorch model on ``images`` (uint8 N×C×S×S) at batch 1, 2 and
    64: max |Δprob| and top-1 agreement per batch size."""
    ref, _ = predictor.probs(torch.from_numpy(images), batch_size=256)
    rows = []
    for b in PARITY_BATCHES:
        n = len(images) if b == max(PARITY_BATCHES) else min(len(images), SMALL_BATCH_IMAGES)
        got = exported.probs_of_arrays(images[:n], batch_size=b)
        if got.shape != ref[:n].shape:
            raise CnnlabError(
                f"the exported model gave {got.shape} probabilities at batch {b}, the PyTorch model {ref[:n].shape}"
            )
        rows.append(
            {
                "batch": b,
                "images": n,
                "max_abs_dprob": float(np.abs(got - ref[:n]).max()),
                "top1_agreement": float((got.argmax(1) == ref[:n].argmax(1)).mean()),
            }
        )
    return {
        "split": split,
        "images": len(images),
        "rows": rows,
        "max_abs_dprob": max(r["max_abs_dprob"] for r in rows),
        "top1_agreement": min(r["top1_agreement"] for r in rows),
    }


def _parity_images(
    folder: RunFolder, predictor: Predictor, limit: int | None, progress: bool
) -> tuple[np.ndarray, str]:
    """The run's test (else validation) images; when the data the run was trained on is not on this
    machine (a run moved elsewhere), seeded random images of the model's input shape instead: the
    check then proves the two graphs compute the same function, not how they do on real images."""
    cfg = folder.read_config()
    missing = data_problem(cfg)
    if missing:
        n = limit or RANDOM_CHECK_IMAGES
        log.warning(
            "the training data %r is not here (%s): checking the export on %d random images",
            cfg.data.source,
            missing,
            n,
        )
        pre = predictor.preprocess
        shape = (n, pre.channels, pre.input_size, pre.input_size)
        return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8), "random"
    data = load_run_data(folder, cfg, progress)
    split = "test" if len(data.splits.get("test", [])) else "val"
    idx = np.asarray(data.splits[split])
    if not len(idx):
        raise CnnlabError(f"run {folder.path} has neither test nor validation images to check the export on")
    if limit:
        idx = idx[:limit]
    picked = data.images[torch.from_numpy(np.sort(idx))]  # a tensor, a file store or shards alike
    return np.ascontiguousarray(picked.numpy() if isinstance(picked, torch.Tensor) else np.asarray(picked)), split


def _write_and_check(
    module: nn.Module,
    example: torch.Tensor,
    meta: dict[str, Any],
    path: Path,
    fmt: str,
    folder: RunFolder,
    predictor: Predictor,
    check: bool,
    tolerance: float,
    min_agreement: float,
    check_images: int | None,
    progress: bool,
    target: Path,
) -> dict[str, Any] | None:
    """Write the model to ``path`` and run the parity check on it; raises when it fails."""
    log.info("exporting %s (%s) to %s", folder.path, fmt, target)
    (_write_onnx if fmt == "onnx" else _write_torchscript)(module, example, meta, path)
    if not check:
        return None
    images, split = _parity_images(folder, predictor, check_images, progress)
    report = parity(ExportedModel.load(path), predictor, images, split)
    if report["max_abs_dprob"] > tolerance or report["top1_agreement"] < min_agreement:
        raise CnnlabError(
            f"parity check failed: max |Δprob| {report['max_abs_dprob']:.2e} (allowed {tolerance:g}), "
            f"top-1 agreement {report['top1_agreement']:.4%} (needed {min_agreement:.2%}); {target} was not written"
        )
    return report


class Exported(BaseModel):
    """What `export_run` wrote: the file, its format and size, the metadata inside it, and the parity
    check against PyTorch (None when skipped)."""

    file: str
    format: str
    bytes: int
    metadata: dict[str, Any]
    parity: dict[str, Any] | None


def export_run(run: str | Path, settings: ExportSettings | None = None, progress: bool = True) -> Exported:
    """Export a run's best checkpoint and check it (:class:`ExportSettings`: the format, the file
    — default ``RUN/export/model.onnx`` or ``model.ts`` —, preprocessing in the graph, and the parity
    check's tolerance, agreement and images; the file is kept only when the check passes).

    Raises:
        CnnlabError: an unknown format, a run without checkpoint, or a failed parity check.
    """
    st = settings or ExportSettings()
    fmt, out, with_preprocessing, check = st.format, st.out, st.with_preprocessing, st.check
    tolerance, min_agreement, check_images = st.tolerance, st.min_agreement, st.check_images
    if fmt not in FORMATS:
        raise CnnlabError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    folder = RunFolder(run).require()
    predictor = Predictor.from_run(folder, "cpu")
    module: nn.Module = predictor.model.eval()
    pre = predictor.preprocess
    if with_preprocessing:
        if pre.normalize not in ("mean-std", "per-image", "none"):
            raise CnnlabError(f"--with-preprocessing: the run's normalisation {pre.normalize!r} cannot go in the graph")
        module = WithPreprocessing(module, pre).eval()
    meta = metadata(predictor, folder, fmt, with_preprocessing)
    example = torch.zeros(
        2, pre.channels, pre.input_size, pre.input_size, dtype=torch.uint8 if with_preprocessing else torch.float32
    )
    if not with_preprocessing:
        example.normal_(generator=torch.Generator().manual_seed(0))
    name = f"model{FORMATS[fmt]}"
    if out is None:  # into the run folder, through its writer: RUN/export/ gains the file only on success
        target = folder.path / "export" / name
        with folder.artifacts("export", merge=True) as scratch:
            report = _write_and_check(
                module,
                example,
                meta,
                scratch / name,
                fmt,
                folder,
                predictor,
                check,
                tolerance,
                min_agreement,
                check_images,
                progress,
                target,
            )
    else:
        target = Path(out)
        if target.is_dir():
            raise CnnlabError(f"--out {target}: is a folder; give a file name such as {target / name}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=FORMATS[fmt], dir=target.parent)
        except OSError as e:
            raise DiskError(target, e) from None
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            report = _write_and_check(
                module,
                example,
                meta,
                tmp,
                fmt,
                folder,
                predictor,
                check,
                tolerance,
                min_agreement,
                check_images,
                progress,
                target,
            )
            os.replace(tmp, target)
        except OSError as e:
            raise DiskError(target, e) from None
        finally:
            tmp.unlink(missing_ok=True)
    return Exported(file=str(target), format=fmt, bytes=target.stat().st_size, metadata=meta, parity=report)
