"""Explainability: Grad-CAM (the maintained `grad-cam` package), first-layer filters, feature maps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from cnnlab.core.errors import CnnlabError
from cnnlab.models.ops import probabilities

if TYPE_CHECKING:
    from cnnlab.inference.predictor import Predictor


def last_conv(model: nn.Module) -> nn.Conv2d:
    """The last Conv2d in module order: Grad-CAM's usual target layer."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise CnnlabError("Grad-CAM needs a convolutional layer; this model has none (dense nets have no feature map)")
    return convs[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, classes: Sequence[int | None]) -> np.ndarray:
    """Grad-CAM heat maps (B, H, W) in 0..1 for normalised inputs ``x``; ``classes[i]`` None
    means the predicted class."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1).tolist()
    targets = [ClassifierOutputTarget(int(c if c is not None else p)) for c, p in zip(classes, pred)]
    with GradCAM(model=model, target_layers=[last_conv(model)]) as cam:
        heat = cam(input_tensor=x, targets=targets)
    return np.asarray(heat)


def explain_image(
    predictor: Predictor, arr: np.ndarray, targets: Sequence[int | None] = (None,)
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """One decoded (C, S, S) uint8 image through a predictor's model: its normalised batch of one,
    its probabilities (K,) and a Grad-CAM heat map per ``targets`` entry (None: the predicted class)."""

    model = predictor.model
    batches = predictor.batches(torch.from_numpy(arr[None].copy()), torch.zeros(1, dtype=torch.long), np.arange(1), 1)
    batches.reuse_buffers = False
    x = next(iter(batches))[0]
    with torch.no_grad():
        probs = probabilities(model(x), predictor.multilabel)[0].cpu().numpy()
    heats = grad_cam(model, x.repeat(len(targets), 1, 1, 1), list(targets))
    return x, probs, heats


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 image and an (H, W) heat map → (H, W, 3) float RGB overlay."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = image.transpose(1, 2, 0).astype(np.float32) / 255.0
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return show_cam_on_image(rgb, heat, use_rgb=True).astype(np.float32) / 255.0


def first_layer_filters(model: nn.Module) -> list[np.ndarray]:
    """The first conv's filters, each scaled to 0..1, as (k, k, 3) or (k, k) images."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise CnnlabError("this model has no convolutional layer to show filters of")
    w = conv.weight.detach().float().cpu().numpy()
    out = []
    for f in w[:64]:
        f = (f - f.min()) / max(float(f.max() - f.min()), 1e-8)
        out.append(f.transpose(1, 2, 0) if f.shape[0] == 3 else f.mean(0))
    return out


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor, stages: int = 6, channels: int = 6) -> list[tuple[str, np.ndarray]]:
    """Activations of up to ``stages`` conv layers spread over the depth, first ``channels``
    maps each, for one normalised image ``x`` (1, C, H, W)."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise CnnlabError("this model has no convolutional layer to show feature maps of")
    pick = [convs[i] for i in np.unique(np.linspace(0, len(convs) - 1, min(stages, len(convs))).astype(int))]
    seen: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, name=n: seen.__setitem__(name, out)) for n, m in pick]
    try:
        model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return [(n, seen[n][0, :channels].float().cpu().numpy()) for n, _ in pick]


# ---------------------------------------------------------------- sanity checks of the heat maps
# Written here: the grad-cam package draws maps but does not test them. Both checks follow their
# papers: model randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps") and the
# deletion curve (Petsiuk et al. 2018, RISE).

DELETION_STEPS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)  # shares of the pixels removed
BORDER = 0.15  # the outer ring (of each side's length) whose share of the heat is reported


def randomised_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with every layer's parameters (and BatchNorm statistics) re-initialised
    by its own ``reset_parameters``: the same architecture, no learned weights."""
    import copy

    clone = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in clone.modules():
            for name in ("reset_parameters", "reset_running_stats"):
                reset = getattr(m, name, None)
                if callable(reset):
                    reset()
    return clone.eval()


def map_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two heat maps (scipy; a constant map carries no ranking and
    scores 0)."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


@torch.no_grad()
def deletion_curve(
    model: nn.Module, x: torch.Tensor, heat: np.ndarray, target: int, multilabel: bool = False
) -> np.ndarray:
    """The probability of class ``target`` as the hottest pixels of one normalised image ``x``
    (1, C, H, W) are set to the data's mean (0 after normalisation), a share DELETION_STEPS at a
    time; one batch of len(DELETION_STEPS) images."""
    h, w = x.shape[-2:]
    order = torch.from_numpy(np.argsort(-heat.ravel(), kind="stable").copy()).to(x.device)
    batch = x.repeat(len(DELETION_STEPS), 1, 1, 1).reshape(len(DELETION_STEPS), x.shape[1], h * w)
    for i, share in enumerate(DELETION_STEPS):
        batch[i, :, order[: int(round(share * h * w))]] = 0
    probs = probabilities(model(batch.reshape(-1, x.shape[1], h, w)), multilabel)
    return probs[:, target].float().cpu().numpy()


def curve_area(curve: np.ndarray) -> float:
    """The area under a deletion curve over the share of pixels removed (0..1): lower means the
    map found the pixels the prediction rests on."""
    return float(np.trapezoid(curve, DELETION_STEPS))


def border_share(heat: np.ndarray, ring: float = BORDER) -> float:
    """The share of a heat map's mass in the outer ``ring`` of the image (by each side's length; at
    0.15 the ring is 51 % of the area): near or above that, the model looks at the edges rather than
    at a centred object."""
    h, w = heat.shape
    dy, dx = max(1, round(ring * h)), max(1, round(ring * w))
    total = float(heat.sum())
    if total <= 0:
        return 0.0
    return float((total - heat[dy : h - dy, dx : w - dx].sum()) / total)
