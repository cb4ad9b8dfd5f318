"""Figures as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cnnlab.evaluate.metrics import cumulative_gains


def layout(fig) -> None:
    """``tight_layout``, leaving room for a figure title (which tight_layout ignores)."""
    title = fig._suptitle
    if title is not None and title.get_text():  # measured with the renderer: no full draw needed
        height = title.get_window_extent(fig.canvas.get_renderer()).height / fig.bbox.height
        fig.tight_layout(rect=(0, 0, 1, 1 - height - 0.01))
    else:
        fig.tight_layout()


def save_figure(fig, path: Path, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        layout(fig)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_lr_find(lrs: Sequence[float], losses: Sequence[float], suggestion: float | None, path: Path) -> Path:
    """Smoothed loss against learning rate (log scale), with the suggested LR marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed)")
    if suggestion:
        ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.2e}")
        ax.legend()
    ax.set_title("learning-rate range test")
    return save_figure(fig, path)


def plot_curves(history: Sequence[dict], path: Path, steps: Sequence[dict] = (), title: str = "") -> Path:
    """Loss and accuracy per epoch (per step for a run trained by ``--steps``, whose history rows
    carry the step of each validation), train vs validation; per-step training loss underneath."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    by_step = bool(history) and all(h.get("step") not in (None, "") for h in history)
    ep = [int(h["step"]) if by_step else int(h["epoch"]) for h in history]
    for ax, key in zip(axes, ("loss", "acc")):
        if len(steps) > len(history):  # finer than one point per epoch: worth drawing
            per_epoch = 1.0 if by_step else max(int(s["step"]) for s in steps) / max(ep)
            every = int(steps[0]["step"])
            ax.plot(
                [int(s["step"]) / per_epoch for s in steps],
                [float(s[key]) for s in steps],
                color="tab:blue",
                alpha=0.3,
                lw=1,
                label=f"train, every {every} steps",
            )
        ax.plot(ep, [float(h[f"train_{key}"]) for h in history], "o-", color="tab:blue", label="train")
        val = [h.get(f"val_{key}") for h in history]
        if any(v not in (None, "") for v in val):
            ax.plot(
                ep,
                [float(v) if v not in (None, "") else float("nan") for v in val],
                "o-",
                color="tab:orange",
                label="validation",
            )
        ax.set_xlabel("step" if by_step else "epoch")
        ax.set_ylabel("loss" if key == "loss" else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def plot_confusion(cm: Sequence[Sequence[int]], classes: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrix (recall per true class) with counts."""
    import numpy as np

    cm = np.asarray(cm, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(classes)
    cell, font = (0.7, 8) if k <= 20 else (0.13, 7)  # numbers in the cells up to 20 classes, names only beyond
    longest = min(max(map(len, classes), default=0), 40)
    room = 0.06 * max(longest - 12, 0)  # inches for long names beside and under the matrix
    fig, ax = plt.subplots(figsize=(max(4.5, cell * k + 2.5) + room, max(4, cell * 0.9 * k + 2) + room))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    upright = k > 20 or longest > 12  # long names slanted at 60° run into each other
    ax.set_xticks(range(k), classes, rotation=90 if upright else 60, ha="center" if upright else "right", fontsize=font)
    ax.set_yticks(range(k), classes, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title("confusion matrix (rows sum to 1)")
    return save_figure(fig, path)


def plot_per_class(per_class: dict, path: Path, key: str = "f1") -> Path:
    """Horizontal bars of a per-class metric."""
    names = list(per_class)
    vals = [per_class[n][key] for n in names]
    many = len(names) > 40  # 100 classes: 7-pt names on 0.13-inch rows instead of a 31-inch figure
    fig, ax = plt.subplots(figsize=(6, max(2.5, (0.13 if many else 0.3) * len(names) + 1)))
    ax.barh(range(len(names)), vals, color="tab:green")
    ax.set_yticks(range(len(names)), names, fontsize=7 if many else 8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(key.upper() if len(key) <= 3 else key)
    ax.set_title(f"per-class {key}")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


def plot_gains(y_true, probs, classes: Sequence[str], path: Path) -> Path:
    """Cumulative gains per class (seed 001 Fig. 4), the diagonal of a random ordering."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    shown = _largest_classes(y_true, len(classes))
    for c in shown:
        pos = (np.asarray(y_true) == c).astype(int)
        x, g = cumulative_gains(pos, probs[:, c])
        ax.plot(x, g, lw=1, label=classes[c])
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="random")
    ax.set_xlabel("share of images taken (by decreasing score)")
    ax.set_ylabel("share of the class found")
    ax.set_title("cumulative gains per class" + (f" ({len(shown)} largest)" if len(shown) < len(classes) else ""))
    ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path)


def _largest_classes(y_true, k: int, limit: int = 12) -> list[int]:
    """Classes present in ``y_true``, the ``limit`` largest when there are more (a legible plot)."""
    import numpy as np

    counts = np.bincount(np.asarray(y_true), minlength=k)
    present = [c for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    return sorted(present[:limit])


def plot_roc(y_true, probs, classes: Sequence[str], path: Path) -> Path:
    """One-vs-rest ROC curves."""
    import numpy as np
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for c in _largest_classes(y_true, len(classes)):
        pos = np.asarray(y_true) == c
        if not pos.all():
            fpr, tpr, _ = roc_curve(pos, probs[:, c])
            ax.plot(fpr, tpr, lw=1, label=classes[c])
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC, one class vs the rest")
    ax.legend(fontsize=6, ncol=2)
    return save_figure(fig, path)


def plot_reliability(rel: dict, path: Path, ece: float) -> Path:
    """Reliability diagram: accuracy against confidence per bin."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    width = 1.0 / len(rel["confidence"])
    centers = [(i + 0.5) * width for i in range(len(rel["confidence"]))]
    ax.bar(centers, rel["accuracy"], width=width * 0.9, color="tab:blue", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability diagram (ECE {ece:.3f})")
    ax.legend()
    return save_figure(fig, path)


def plot_image_grid(
    images, titles: Sequence[str], path: Path, cols: int = 6, title: str = "", colors: Sequence[str] | None = None
) -> Path:
    """A grid of (C, H, W) uint8 images (or (H, W, 3) floats) with a caption each."""
    import numpy as np

    n = max(len(images), 1)
    rows = (n + cols - 1) // cols
    lines = max((str(t).count("\n") + 1 for t in titles), default=1)  # room for captions of several lines
    caption, head = 0.13 * lines + 0.08, (0.45 if title else 0.0)  # inches
    height = rows * (1.75 + caption) + head + 0.05
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.9, height), squeeze=False)
    # laid out by hand: tight_layout measures every empty axis and took seconds for a report's grids
    fig.subplots_adjust(
        left=0.01,
        right=0.99,
        bottom=0.05 / height,
        top=1 - (head + caption) / height,
        wspace=0.08,
        hspace=caption / 1.75,
    )
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        arr = np.asarray(img)
        if arr.ndim == 3 and arr.shape[0] in (1, 3):
            arr = arr.transpose(1, 2, 0)
        ax = axes.flat[i]
        ax.imshow(arr.squeeze(), cmap="gray" if arr.ndim == 2 or arr.shape[-1] == 1 else None)
        # a caption as plain text above the image: axis titles re-measure every axis of the row at
        # each draw, which made a report's image grids take seconds
        ax.text(
            0.5,
            1.0,
            titles[i],
            transform=ax.transAxes,
            ha="center",
            va="bottom",
            fontsize=7,
            color=(colors[i] if colors else "black"),
        )
    if title:
        fig.suptitle(title, y=1 - 0.08 / height, va="top")
    return save_figure(fig, path, tight=False)


def plot_feature_maps(maps: Sequence[tuple[str, object]], path: Path) -> Path:
    """One row per conv layer, its first channels' activations."""
    cols = max(m.shape[0] for _, m in maps)
    fig, axes = plt.subplots(len(maps), cols, figsize=(cols * 1.5, len(maps) * 1.6), squeeze=False)
    for r, (name, m) in enumerate(maps):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < m.shape[0]:
                ax.imshow(m[c], cmap="viridis")
        axes[r][0].set_title(name, fontsize=7, loc="left")
    fig.suptitle("feature maps, shallow to deep")
    return save_figure(fig, path)


def plot_deletion(
    steps: Sequence[float],
    curves: dict[str, Sequence[float]],
    path: Path,
    trained: Sequence[float],
    randomised: Sequence[float],
) -> Path:
    """Grad-CAM's sanity in two panels: mean deletion curves (probability of the predicted class as
    the hottest pixels go) and the map similarities of the randomisation check, per image."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, curve in curves.items():
        ax.plot(steps, curve, "o-", label=name)
    ax.set_xlabel("share of pixels removed (hottest first)")
    ax.set_ylabel("probability of the predicted class")
    ax.set_title("deletion curve")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    bins = np.linspace(-1, 1, 41)
    bx.hist(trained, bins=bins, alpha=0.6, label="trained, input + noise")
    bx.hist(randomised, bins=bins, alpha=0.6, label="randomised weights")
    bx.set_xlabel("Spearman correlation with the trained model's map")
    bx.set_ylabel("images")
    bx.set_title("model randomisation")
    bx.legend(fontsize=8)
    return save_figure(fig, path)
