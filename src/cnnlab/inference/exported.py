"""An exported model file (ONNX, or TorchScript) with the metadata `cnnlab export` wrote into it:
classes, preprocessing, thresholds. An ONNX file needs ONNX Runtime, NumPy and Pillow only; this
module imports no PyTorch unless it is handed a TorchScript file."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.core.errors import CnnlabError
from cnnlab.inference.preprocess import ImageInput, Preprocess, predict_with

META_KEY = "cnnlab"  # ONNX metadata_props key / TorchScript extra file (cnnlab.json)
META_VERSION = 1
ONNX_SUFFIXES = (".onnx",)
TORCHSCRIPT_SUFFIXES = (".ts", ".torchscript")  # not .pt: a checkpoint is no TorchScript program


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def is_exported_file(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and p.suffix.lower() in ONNX_SUFFIXES + TORCHSCRIPT_SUFFIXES


class ExportedModel:
    """A model file made by `cnnlab export`, predicting exactly like the run it came from.

    Build it with :meth:`load`; it has the same ``predict`` as :class:`cnnlab.inference.predictor.Predictor`.
    """

    def __init__(self, path: Path, meta: dict[str, Any], run_logits: Callable[[np.ndarray], np.ndarray], fmt: str):
        self.path, self.meta, self.format, self._run = path, meta, fmt, run_logits
        try:
            self.classes: list[str] = [str(c) for c in meta["classes"]]
            self.multilabel = bool(meta.get("multilabel"))
            self.thresholds: list[float] | None = meta.get("thresholds")
            self.preprocess = Preprocess.from_dict(meta["preprocess"])
            self.uint8_input = meta["input"]["dtype"] == "uint8"
        except (KeyError, TypeError, ValueError) as e:
            raise CnnlabError(f"{path}: its cnnlab metadata is incomplete ({e}); export the run again") from None
        self.name = str(meta.get("model", path.stem))

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None) -> ExportedModel:
        """Open an .onnx (ONNX Runtime) or TorchScript (.ts/.torchscript/.pt) file of `cnnlab export`."""
        p = Path(path)
        if not p.is_file():
            raise CnnlabError(f"{p}: no such model file")
        if p.suffix.lower() in ONNX_SUFFIXES:
            return cls._load_onnx(p, threads)
        if p.suffix.lower() in TORCHSCRIPT_SUFFIXES:
            return cls._load_torchscript(p)
        raise CnnlabError(f"{p}: not a model file cnnlab can load (.onnx, .ts/.torchscript, or a run folder)")

    @classmethod
    def _load_onnx(cls, p: Path, threads: int | None) -> ExportedModel:
        try:
            import onnxruntime as ort
        except ImportError:
            raise CnnlabError("reading an .onnx model needs ONNX Runtime: pip install onnxruntime") from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        try:
            sess = ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for every kind of bad file
            raise CnnlabError(f"{p}: not a readable ONNX model ({' '.join(str(e).split())[:200]})") from None
        meta = _parse_meta(p, sess.get_modelmeta().custom_metadata_map.get(META_KEY))
        name = sess.get_inputs()[0].name

        def run(x: np.ndarray) -> np.ndarray:
            return sess.run(None, {name: x})[0]

        return cls(p, meta, run, "onnx")

    @classmethod
    def _load_torchscript(cls, p: Path) -> ExportedModel:
        try:
            import torch
        except ImportError:
            raise CnnlabError(
                "reading a TorchScript model needs PyTorch; export to ONNX for a torch-free client"
            ) from None
        extra = {f"{META_KEY}.json": ""}
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
                module = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
        except Exception as e:  # RuntimeError for anything that is not a TorchScript archive
            raise CnnlabError(f"{p}: not a readable TorchScript model ({' '.join(str(e).split())[:200]})") from None
        meta = _parse_meta(p, extra[f"{META_KEY}.json"] or None)
        module.eval()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(x)).float().numpy()

        return cls(p, meta, run, "torchscript")

    # ------------------------------------------------------------------ prediction
    def logits(self, x: np.ndarray) -> np.ndarray:
        """uint8 (N, C, S, S) decoded images → logits (N, K)."""
        return self._run(np.ascontiguousarray(x) if self.uint8_input else self.preprocess.normalize_array(x))

    def probs_of_arrays(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 (N, C, S, S) → probabilities (N, K), ``batch_size`` images per call."""
        parts = [self.logits(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        z = np.concatenate(parts) if parts else np.zeros((0, len(self.classes)), np.float32)
        return sigmoid(z) if self.multilabel else softmax(z)

    def predict(self, inputs: Sequence[ImageInput], top_k: int = 3, batch_size: int = 64) -> list[dict[str, Any]]:
        """Top-k classes per input; the same results as the run's :class:`~cnnlab.inference.predictor.Predictor`."""
        return predict_with(
            self.preprocess,
            lambda x: self.probs_of_arrays(x, batch_size),
            inputs,
            self.classes,
            self.multilabel,
            self.thresholds,
            top_k,
        )

    def info(self) -> dict[str, Any]:
        """What a client needs to know: classes, preprocessing, metrics, versions."""
        keys = (
            "model",
            "classes",
            "multilabel",
            "thresholds",
            "preprocess",
            "input",
            "metrics",
            "run",
            "epoch",
            "versions",
            "exported",
        )
        return {"format": self.format, "file": self.path.name, **{k: self.meta.get(k) for k in keys}}


def _parse_meta(p: Path, text: str | None) -> dict[str, Any]:
    if not text:
        raise CnnlabError(
            f"{p}: no cnnlab metadata (classes, preprocessing) in this file; make it with `cnnlab export RUN`"
        )
    try:
        meta = json.loads(text)
    except ValueError:
        raise CnnlabError(f"{p}: its cnnlab metadata is not valid JSON; export the run again") from None
    if not isinstance(meta, dict) or meta.get("format_version") != META_VERSION:
        raise CnnlabError(
            f"{p}: cnnlab metadata of an unknown version "
            f"({meta.get('format_version') if isinstance(meta, dict) else '?'}); "
            f"this cnnlab reads version {META_VERSION}"
        )
    return meta
