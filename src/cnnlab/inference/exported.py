"""An exported model file (ONNX, or TorchScript) with the metadata `cnnlab export` wrote into it:
classes, preprocessing, thresholds. An ONNX file needs ONNX Runtime, NumPy and Pillow only; this
module imports no PyTorch unless it is handed a TorchScript file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.core.errors import CnnlabError
from cnnlab.core.locations import cache_dir
from cnnlab.data.images import DEFAULT_MAX_PIXELS
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

    def __init__(
        self,
        path: Path,
        meta: dict[str, Any],
        run_logits: Callable[[np.ndarray], np.ndarray],
        fmt: str,
        shapes: tuple[Sequence[Any], Sequence[Any]] | None = None,
    ):
        self.path, self.meta, self.format, self._run = path, meta, fmt, run_logits
        try:
            classes = meta["classes"]
            if not isinstance(classes, list) or not classes or not all(isinstance(c, (str, int)) for c in classes):
                raise ValueError("classes must be a non-empty list of names")
            self.classes: list[str] = [str(c) for c in classes]
            self.multilabel = bool(meta.get("multilabel"))
            self.thresholds: list[float] | None = _thresholds(
                meta.get("thresholds"), len(self.classes), self.multilabel
            )
            pre = Preprocess.from_dict(meta["preprocess"])
            # the file may ask for a smaller pixel budget, never a larger one: only the user lifts it
            self.preprocess = dataclasses.replace(pre, max_pixels=min(pre.max_pixels, DEFAULT_MAX_PIXELS))
            if meta["input"]["dtype"] not in ("uint8", "float32"):
                raise ValueError(f"input dtype {meta['input']['dtype']!r} is neither uint8 nor float32")
            self.uint8_input = meta["input"]["dtype"] == "uint8"
            t = meta["output"].get("temperature", 1.0)  # --calibrate temperature: logits / T before the softmax
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.01 <= t <= 100:
                raise ValueError(f"output temperature {t!r} is not a number from 0.01 to 100")
            self.temperature = float(t)
            if shapes is not None:
                _match_shapes(self.preprocess, len(self.classes), *shapes)
        except (KeyError, TypeError, ValueError) as e:
            raise CnnlabError(
                f"{path}: its cnnlab metadata is incomplete or wrong ({e}); export the run again"
            ) from None
        self.name = str(meta.get("model", path.stem))

    @classmethod
    def load(cls, path: str | Path, threads: int | None = None, trust_torchscript: bool = False) -> ExportedModel:
        """Open an .onnx (ONNX Runtime) or TorchScript (.ts/.torchscript) file of `cnnlab export`.

        A TorchScript file is a program: loading it can run its code. It is opened only when
        ``trust_torchscript`` is given or `cnnlab export` wrote it on this machine (its digest is in
        the cache's list of exports); ONNX files are data and always open."""
        p = Path(path)
        if not p.is_file():
            raise CnnlabError(f"{p}: no such model file")
        if p.suffix.lower() in ONNX_SUFFIXES:
            return cls._load_onnx(p, threads)
        if p.suffix.lower() in TORCHSCRIPT_SUFFIXES:
            if not trust_torchscript and not is_own_export(p):
                raise CnnlabError(
                    f"{p}: a TorchScript file runs code when it is loaded, and this one was not exported by cnnlab "
                    "here; pass --trust-torchscript if you trust its source, or use the .onnx export (data only)"
                )
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

        return cls(p, meta, run, "onnx", (sess.get_inputs()[0].shape, sess.get_outputs()[0].shape))

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

        model = cls(p, meta, run, "torchscript")
        pre = model.preprocess
        probe = np.zeros((1, pre.channels, pre.input_size, pre.input_size), np.uint8)
        try:
            out = model.logits(probe)
        except Exception as e:
            raise CnnlabError(f"{p}: the model does not take the input its metadata describes ({e})") from None
        if out.shape != (1, len(model.classes)):
            raise CnnlabError(f"{p}: the model gives {out.shape[-1]} outputs for {len(model.classes)} classes")
        return model

    # ------------------------------------------------------------------ prediction
    def logits(self, x: np.ndarray) -> np.ndarray:
        """uint8 (N, C, S, S) decoded images → logits (N, K)."""
        return self._run(np.ascontiguousarray(x) if self.uint8_input else self.preprocess.normalize_array(x))

    def probs_of_arrays(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 (N, C, S, S) → probabilities (N, K), ``batch_size`` images per call."""
        parts = [self.logits(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        z = np.concatenate(parts) if parts else np.zeros((0, len(self.classes)), np.float32)
        return sigmoid(z) if self.multilabel else softmax(z / self.temperature)

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


def _thresholds(value: Any, k: int, multilabel: bool) -> list[float] | None:
    """Per-class decision thresholds of a multi-label model (in [0, 1], one per class), else None."""
    if value is None or not multilabel:
        return None
    if not isinstance(value, list) or len(value) != k:
        raise ValueError(f"thresholds must be {k} numbers, one per class")
    out = [float(v) for v in value]
    if not all(0.0 <= v <= 1.0 for v in out):
        raise ValueError("thresholds must lie in [0, 1]")
    return out


def _match_shapes(pre: Preprocess, k: int, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
    """The metadata must describe the graph it rides in: (N, C, S, S) in, (N, K) out (dynamic
    dimensions, named by strings, match anything)."""
    want_in, want_out = (None, pre.channels, pre.input_size, pre.input_size), (None, k)
    for what, have, want in (("input", inputs, want_in), ("output", outputs, want_out)):
        if len(have) != len(want) or any(isinstance(h, int) and w is not None and h != w for h, w in zip(have, want)):
            raise ValueError(f"the model's {what} shape is {list(have)}, the metadata says {list(want)}")


MAX_META_BYTES = 1 << 20  # a metadata block of cnnlab's is a few KB


def _parse_meta(p: Path, text: str | None) -> dict[str, Any]:
    if not text:
        raise CnnlabError(
            f"{p}: no cnnlab metadata (classes, preprocessing) in this file; make it with `cnnlab export RUN`"
        )
    if len(text) > MAX_META_BYTES:
        raise CnnlabError(f"{p}: its cnnlab metadata is {len(text):,} bytes, too large to be cnnlab's")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        raise CnnlabError(f"{p}: its cnnlab metadata is not valid JSON; export the run again") from None
    if not isinstance(meta, dict) or meta.get("format_version") != META_VERSION:
        raise CnnlabError(
            f"{p}: cnnlab metadata of an unknown version "
            f"({meta.get('format_version') if isinstance(meta, dict) else '?'}); "
            f"this cnnlab reads version {META_VERSION}"
        )
    return meta


def _exports_list() -> Path:
    return cache_dir() / "exports.txt"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_own_export(path: Path) -> None:
    """`cnnlab export` adds the digest of a TorchScript file it wrote to the cache's list, so that
    this machine's cnnlab opens it without --trust-torchscript (a file changed since is not on it)."""
    try:
        target = _exports_list()
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a", encoding="ascii") as f:
            f.write(file_digest(path) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError:  # a read-only cache: the file then needs --trust-torchscript, which says so
        pass


def is_own_export(path: Path) -> bool:
    try:
        known = set(_exports_list().read_text(encoding="ascii").split())
    except (OSError, UnicodeDecodeError):
        return False
    return file_digest(path) in known
