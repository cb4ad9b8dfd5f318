"""The task decides the loss, the accuracy and the probabilities: single-label or multi-label."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.ops import probabilities
from cnnlab.models.transfer import output_layer


class SingleLabel:
    """Softmax cross-entropy over K classes; targets are class indices or soft (mixup) rows.

    Args:
        weight: optional per-class loss weights (``--class-weights auto``).
        label_smoothing: the training loss's targets become (1 - e) one-hot + e / K (soft mixup
            targets likewise); :meth:`loss`, the validation figure, stays plain cross-entropy.
    """

    multilabel = False

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        self.weight, self.label_smoothing = weight, label_smoothing

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(logits.device) if self.weight is not None else None
        return F.cross_entropy(logits, y, weight=w)

    def train_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(logits.device) if self.weight is not None else None
        return F.cross_entropy(logits, y, weight=w, label_smoothing=self.label_smoothing)

    def correct(self, logits: torch.Tensor, y: torch.Tensor) -> int:
        target = y.argmax(1) if y.dim() == 2 else y
        return int((logits.argmax(1) == target).sum())

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return probabilities(logits, multilabel=False)


class MultiLabel:
    """Independent sigmoid outputs with binary cross-entropy; accuracy is exact-set match
    at threshold 0.5 (subset accuracy)."""

    multilabel = True

    def __init__(self, threshold: float = 0.5):
        self.threshold = threshold

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, y.float())

    train_loss = loss

    def correct(self, logits: torch.Tensor, y: torch.Tensor) -> int:
        pred = torch.sigmoid(logits) >= self.threshold
        return int((pred == (y > 0.5)).all(1).sum())

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        return probabilities(logits, multilabel=True)


def task_for(multilabel: bool) -> SingleLabel | MultiLabel:
    """The unweighted task of single- or multi-label data (for probabilities at inference)."""
    return MultiLabel() if multilabel else SingleLabel()


def balanced_class_weights(counts: np.ndarray) -> torch.Tensor:
    """Seed 004's class weights w_c = n / (k · n_c) (scikit-learn's "balanced"); absent classes get 0."""
    counts = np.asarray(counts, dtype=np.float64)
    n, k = counts.sum(), len(counts)
    w = np.where(counts > 0, n / (k * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


@torch.no_grad()
def init_output_bias(model: nn.Module, counts: np.ndarray, num_images: int | None = None, eps: float = 1e-6) -> None:
    """Set the output bias so the untrained model predicts the class frequencies (seed 004).

    Single-label (``num_images`` None): b_c = log f_c with f_c = n_c / n, so softmax(b) = f.
    Multi-label: b_c = log(p_c / (1 − p_c)) with p_c = n_c / num_images, so sigmoid(b_c) = p_c.
    """
    counts = np.asarray(counts, dtype=np.float64)
    layer = output_layer(model)
    if layer.bias is None:
        raise ValueError("the output layer has no bias")
    if num_images is None:
        bias = np.log(np.clip(counts / counts.sum(), eps, 1.0))
    else:
        p = np.clip(counts / max(num_images, 1), eps, 1 - eps)
        bias = np.log(p / (1 - p))
    layer.bias.copy_(torch.tensor(bias, dtype=layer.bias.dtype))
