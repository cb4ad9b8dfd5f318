"""The one way to get predictions from a trained model: a Predictor loaded once from a run
folder (best checkpoint, classes, preprocessing as a typed value, tuned multi-label thresholds)
that takes paths, bytes, PIL images or arrays. It imports no training code and no plotting, so
a service can import it."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.core.errors import CnnlabError
from cnnlab.core.names import TTA_VIEWS
from cnnlab.core.schema import build_config
from cnnlab.data.loaders import TensorBatches, make_batches
from cnnlab.inference.preprocess import ImageInput, Preprocess, decode_many, predict_with
from cnnlab.models.build import build_model
from cnnlab.models.ops import predict_logits, probabilities, resolve_device, uses_conv
from cnnlab.runs.store import RunFolder

log = logging.getLogger(__name__)

__all__ = ["ImageInput", "Predictor", "Preprocess"]


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The test-time views of a normalised batch (N, C, S, S): itself; with ``flips`` its mirror
    image; with ``flips+crops`` also the four corner crops of it padded by S/8 (edge pixels
    repeated), each shifted S/8 — the flip and small shifts the training augmentation uses."""
    views = [x]
    if tta in ("flips", "flips+crops"):
        views.append(torch.flip(x, dims=[-1]))
    if tta == "flips+crops":
        s, n = x.shape[-1], max(1, x.shape[-1] // 8)
        padded = torch.nn.functional.pad(x, (n, n, n, n), mode="replicate")
        views += [padded[..., dy : dy + s, dx : dx + s] for dy in (0, 2 * n) for dx in (0, 2 * n)]
    return views


def _temperature(metrics: dict[str, Any], folder: RunFolder) -> float:
    """The run's --calibrate temperature from metrics.json (1 without one; a damaged one warns)."""
    cal = metrics.get("calibration")
    t = cal.get("temperature", 1.0) if isinstance(cal, dict) else 1.0
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.01 <= t <= 100:
        log.warning(
            "%s: calibration temperature %r is not a number from 0.01 to 100; not applied", folder.metrics_json, t
        )
        return 1.0
    return float(t)


class Predictor:
    """A trained model loaded once, with everything needed to predict like the run did.

    Build it with :meth:`from_run` (or :meth:`from_checkpoint`); call :meth:`predict` on any
    images, or :meth:`probs` on already-decoded uint8 arrays.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        ckpt: dict[str, Any],
        device: torch.device,
        thresholds: Sequence[float] | None = None,
        run: RunFolder | None = None,
        max_pixels: int | None = None,
        temperature: float = 1.0,
        tta: str = "none",
    ):
        if tta not in TTA_VIEWS:
            raise CnnlabError(f"--tta {tta!r}: choose {', '.join(TTA_VIEWS)}")
        self.tta = tta  # test-time augmentation: the logits are the mean over these views
        self.model, self.ckpt, self.device, self.run = model, ckpt, device, run
        self.temperature = float(temperature)  # logits / T before the softmax (--calibrate temperature)
        self.classes: list[str] = list(ckpt["classes"])
        self.multilabel = bool(ckpt.get("multilabel"))
        self.preprocess = Preprocess.from_checkpoint(ckpt)
        if max_pixels is not None:  # the pixel budget of this prediction, not the training run's
            self.preprocess = dataclasses.replace(self.preprocess, max_pixels=max_pixels)
        self.thresholds = list(thresholds) if thresholds is not None else None
        self.epoch = ckpt.get("epoch")
        ema = (ckpt.get("config") or {}).get("train", {}).get("ema")
        # which weights these are: best.pt of a train.ema run holds the weights' moving average
        self.weights = f"EMA of the weights (decay {ema})" if ema else "the trained weights"

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], device: str | torch.device = "cpu", **kw: Any) -> Predictor:

        cfg = build_config(ckpt["config"])
        pre = ckpt["preprocess"]
        model = build_model(cfg, len(ckpt["classes"]), pre["channels"], pre["input_size"], for_inference=True)
        model.load_state_dict({k: torch.as_tensor(v) for k, v in ckpt["model"].items()})  # NumPy engine: arrays
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        return cls(model.to(dev).eval(), ckpt, dev, **kw)

    @classmethod
    def from_run(
        cls,
        run: str | Path | RunFolder,
        device: str | torch.device = "auto",
        warn: bool = True,
        max_pixels: int | None = None,
        tta: str = "none",
    ) -> Predictor:
        """The run's best checkpoint (its best so far, with a warning, for an unfinished run) and,
        for multi-label runs, the per-class thresholds tuned on validation."""
        folder = run if isinstance(run, RunFolder) else RunFolder(run).require()
        ckpt = folder.load_checkpoint("best")
        if warn:
            state = folder.state()
            if state.status != "completed":
                log.warning(
                    "run %s is %s%s, not completed: using its best checkpoint so far (epoch %s)%s",
                    folder.path,
                    state.describe(),
                    f" by {state.holder}" if state.holder else "",
                    ckpt.get("epoch"),
                    f"; next: {state.next_step}" if state.next_step else "",
                )
        thresholds, temperature = None, 1.0
        if folder.metrics_json.is_file():
            try:
                metrics = folder.read_json(folder.metrics_json)
            except CnnlabError as e:
                if ckpt.get("multilabel"):
                    raise  # its thresholds are part of its predictions
                log.warning("%s; predicting without a calibrated temperature", e)
                metrics = {}
            if ckpt.get("multilabel"):
                thresholds = metrics.get("tuned_thresholds", {}).get("threshold")
            temperature = _temperature(metrics, folder)
        return cls.from_checkpoint(
            ckpt, device, thresholds=thresholds, run=folder, max_pixels=max_pixels, temperature=temperature, tta=tta
        )

    # ------------------------------------------------------------------ prediction
    def batches(self, images: Any, labels: torch.Tensor, indices: Any, batch_size: int) -> TensorBatches:
        pre = self.preprocess
        return make_batches(
            images,
            labels,
            indices,
            batch_size,
            list(pre.mean),
            list(pre.std),
            device=self.device,
            normalize=pre.normalize,
            channels_last=uses_conv(self.model),
        )

    def probs(
        self,
        images: Any,
        labels: torch.Tensor | None = None,
        indices: Any = None,
        batch_size: int = 256,
        progress: bool = False,
        what: str = "predicting",
    ) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N, K) and labels of decoded uint8 ``images[indices]`` (N, C, S, S)."""
        n = len(images) if indices is None else len(indices)
        idx = np.arange(n) if indices is None else indices
        labels = torch.zeros(len(images), dtype=torch.long) if labels is None else labels
        logits, y = self.logits(images, labels, idx, batch_size, progress, what)
        return self.probabilities(logits).numpy(), y.numpy()

    def logits(
        self, images: Any, labels: torch.Tensor, indices: Any, batch_size: int = 256, progress: bool = False,
        what: str = "predicting",
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """The model's logits (before any temperature) and labels of ``images[indices]``."""
        from tqdm.auto import tqdm

        batches = tqdm(
            self.batches(images, labels, indices, batch_size),
            desc=what,
            unit="batch",
            disable=not progress,
            leave=False,
        )
        return predict_logits(self.model, batches, self.forward)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a normalised batch: the model's, or their mean over the ``tta`` views."""
        if self.tta == "none":
            return self.model(x)
        views = tta_views(x, self.tta)
        if uses_conv(self.model):
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return torch.stack([self.model(v).float() for v in views]).mean(0)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Probabilities of ``logits`` as this model gives them: over the run's temperature."""
        return probabilities(logits / self.temperature if self.temperature != 1.0 else logits, self.multilabel)

    @torch.inference_mode()
    def probs_of_arrays(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Probabilities (N, K) of decoded uint8 (N, C, S, S) images: normalised in NumPy exactly as
        the training loader does, then the model in inference mode; no batching machinery, so a
        single image (a service request) costs little more than the model itself."""
        self.model.eval()
        channels_last = uses_conv(self.model)
        out = []
        for start in range(0, len(x), batch_size):
            t = torch.from_numpy(self.preprocess.normalize_array(x[start : start + batch_size])).to(self.device)
            if channels_last:
                t = t.contiguous(memory_format=torch.channels_last)
            out.append(self.probabilities(self.forward(t).float()).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.classes)), np.float32)

    def decode_all(self, inputs: Sequence[ImageInput]) -> list[tuple[str, np.ndarray | None, str | None]]:
        """(name, array or None, reason or None) per input; one bad input does not stop the others."""
        return decode_many(self.preprocess, inputs)

    def predict(self, inputs: Sequence[ImageInput], top_k: int = 3, batch_size: int = 64) -> list[dict[str, Any]]:
        """Top-k classes per input (paths, bytes, PIL images or arrays), batched.

        Returns:
            Per input ``{"path", "top": [{"class", "prob"}...]}`` (multi-label runs add ``labels``:
            the classes over their tuned thresholds, 0.5 where none were tuned), or ``{"path", "error"}``.
        """
        return predict_with(
            self.preprocess,
            lambda x: self.probs_of_arrays(x, batch_size),
            inputs,
            self.classes,
            self.multilabel,
            self.thresholds,
            top_k,
        )
