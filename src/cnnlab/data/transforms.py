"""Augmentation presets (torchvision transforms v2) applied per image on uint8 tensors, training only."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cnnlab.core.errors import CnnlabError
from cnnlab.core.options import options_problem
from cnnlab.core.registry import Registry


class _V2:
    """torchvision.transforms.v2, imported when a preset first builds a transform: importing
    torchvision costs 1.7 s, which a run without augmentation need not wait for."""

    def __getattr__(self, name: str) -> Any:
        from torchvision.transforms import v2 as module

        return getattr(module, name)


v2 = _V2()
Transform = Callable[[torch.Tensor], torch.Tensor]
Sampler = Callable[[], torch.Tensor]  # returns training images (N, C, H, W) uint8 for presets that need statistics
PRESETS: Registry[Callable[..., Transform | None]] = Registry("augmentation preset")


class PCALighting(nn.Module):
    """AlexNet's PCA colour augmentation as seed 004 writes it (§1.3.4): add
    ``[p1, p2, p3] [α1 λ1, α2 λ2, α3 λ3]ᵀ`` to every pixel, ``λi``/``pi`` the eigenvalues and
    eigenvectors of the 3 × 3 covariance of the training pixels (0..1 scale; the eigenvalues
    themselves, not their square roots), ``αi ~ N(0, alpha_std)`` drawn once per image.

    Written by hand: neither torchvision nor timm ships it.
    """

    def __init__(self, eigval: torch.Tensor, eigvec: torch.Tensor, alpha_std: float = 0.1):
        super().__init__()
        self.eigval, self.eigvec, self.alpha_std = eigval.float(), eigvec.float(), alpha_std

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(len(self.eigval)) * self.alpha_std
        shift = (self.eigvec @ (alpha * self.eigval)) * 255.0
        out = img.float() + shift.view(-1, 1, 1)
        return out.round().clamp(0, 255).to(torch.uint8)


def pixel_pca(images: torch.Tensor, max_images: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and eigenvectors of the channel covariance of (N, C, H, W) uint8 images (0..1)."""
    step = max(1, len(images) // max_images)
    sample = images[::step][:max_images].float() / 255.0
    pixels = sample.permute(0, 2, 3, 1).reshape(-1, sample.shape[1]).double()
    cov = torch.cov(pixels.T).reshape(sample.shape[1], sample.shape[1])
    eigval, eigvec = torch.linalg.eigh(cov)
    return eigval.clamp_min(0).float(), eigvec.float()


@PRESETS.register("none")
def _none(size: int, channels: int, sample: Sampler | None = None) -> Transform | None:
    return None


@PRESETS.register("flip")
def _flip(size: int, channels: int, sample: Sampler | None = None, p: float = 0.5) -> Transform:
    return v2.RandomHorizontalFlip(p)


@PRESETS.register("keras")
def _keras(
    size: int,
    channels: int,
    sample: Sampler | None = None,
    rotation: float = 40,
    width_shift: float = 0.2,
    height_shift: float = 0.2,
    shear: float = 0.2,
    zoom: float = 0.2,
    horizontal_flip: bool = True,
    fill_mode: str = "nearest",
) -> Transform:
    """Keras ImageDataGenerator's geometric augmentation (seeds 002/003 defaults).

    As in Keras, ``shear`` is in degrees and ``zoom`` z samples scale from [1 - z, 1 + z].
    Keras' fill_mode 'nearest'/'reflect' is reproduced by padding with edge/reflected pixels,
    transforming, and cropping back; 'constant' fills with black.
    """
    if fill_mode not in {"nearest", "reflect", "constant"}:
        raise CnnlabError(f"augment option fill_mode={fill_mode!r}: choose nearest, reflect or constant")
    # enough border that no rotated, shifted, zoomed-out view reaches past the padding
    reach = (size / 2 * 2**0.5 + max(width_shift, height_shift) * size) / max(1 - zoom, 0.1)
    pad = int(math.ceil(max(reach - size / 2, 0))) + 1 if fill_mode != "constant" else 0
    big = size + 2 * pad
    steps: list[Transform] = []
    if pad:
        steps.append(v2.Pad(pad, padding_mode="edge" if fill_mode == "nearest" else "reflect"))
    steps.append(
        v2.RandomAffine(
            degrees=rotation,
            translate=(width_shift * size / big, height_shift * size / big),
            shear=shear or None,
            scale=(1 - zoom, 1 + zoom) if zoom else None,
            interpolation=v2.InterpolationMode.BILINEAR,
        )
    )
    if pad:
        steps.append(v2.CenterCrop(size))
    if horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


@PRESETS.register("paintings")
def _paintings(
    size: int, channels: int, sample: Sampler | None = None, alpha_std: float = 0.1, flip: bool = True
) -> Transform:
    """Seed 004: random horizontal flip and PCA colour augmentation. Pair it with
    ``--normalize per-image`` for the report's per-image standardisation."""
    if sample is None:
        raise CnnlabError("the paintings preset needs the training images' colour statistics")
    eigval, eigvec = pixel_pca(sample())
    steps: list[Transform] = [v2.RandomHorizontalFlip()] if flip else []
    steps.append(PCALighting(eigval, eigvec, alpha_std))
    return v2.Compose(steps)


@PRESETS.register("randaugment")
def _randaugment(
    size: int, channels: int, sample: Sampler | None = None, num_ops: int = 2, magnitude: int = 9, flip: bool = True
) -> Transform:
    steps: list[Transform] = [v2.RandomHorizontalFlip()] if flip else []
    return v2.Compose(steps + [v2.RandAugment(num_ops=num_ops, magnitude=magnitude)])


@PRESETS.register("trivialaugment")
def _trivialaugment(size: int, channels: int, sample: Sampler | None = None, flip: bool = True) -> Transform:
    steps: list[Transform] = [v2.RandomHorizontalFlip()] if flip else []
    return v2.Compose(steps + [v2.TrivialAugmentWide()])


@PRESETS.register("rrc")
def _rrc(
    size: int, channels: int, sample: Sampler | None = None, scale_min: float = 0.35, ratio: float = 4 / 3,
    flip: bool = True,
) -> Transform:  # fmt: skip
    """RandomResizedCrop (a crop of ``scale_min``-1 of the area, aspect ``1/ratio``-``ratio``,
    resized back to the side) then a horizontal flip: the transfer-learning recipe of timm and
    torchvision. timm's default scale (0.08, 1) suits 224-px ImageNet crops; 0.35 keeps small images whole enough."""
    if not 0 < scale_min <= 1 or ratio < 1:
        raise CnnlabError("augment options of rrc: scale_min in (0, 1], ratio >= 1")
    steps: list[Transform] = [
        v2.RandomResizedCrop(size, scale=(scale_min, 1.0), ratio=(1 / ratio, ratio), antialias=True)
    ]
    return v2.Compose(steps + ([v2.RandomHorizontalFlip()] if flip else []))


@PRESETS.register("colorjitter")
def _colorjitter(
    size: int, channels: int, sample: Sampler | None = None, brightness: float = 0.3, contrast: float = 0.3,
    saturation: float = 0.3, hue: float = 0.05, flip: bool = True,
) -> Transform:  # fmt: skip
    """torchvision's ColorJitter (saturation and hue only for colour images) and a flip."""
    colour = channels == 3
    jitter = v2.ColorJitter(brightness, contrast, saturation if colour else 0, hue if colour else 0)
    return v2.Compose(([v2.RandomHorizontalFlip()] if flip else []) + [jitter])


@PRESETS.register("autoaugment")
def _autoaugment(size: int, channels: int, sample: Sampler | None = None, policy: str = "imagenet") -> Transform:
    """torchvision's AutoAugment with its learned ``policy`` (imagenet, cifar10 or svhn)."""
    policies = {"imagenet": "IMAGENET", "cifar10": "CIFAR10", "svhn": "SVHN"}
    if policy not in policies:
        raise CnnlabError(f"augment option policy={policy!r}: choose {', '.join(policies)}")
    return v2.AutoAugment(getattr(v2.AutoAugmentPolicy, policies[policy]))


@PRESETS.register("augmix")
def _augmix(
    size: int, channels: int, sample: Sampler | None = None, severity: int = 3, width: int = 3, flip: bool = True
) -> Transform:
    """torchvision's AugMix (``width`` chains of augmentations mixed at ``severity``) and a flip."""
    steps: list[Transform] = [v2.RandomHorizontalFlip()] if flip else []
    return v2.Compose(steps + [v2.AugMix(severity=severity, mixture_width=width)])


def preset_options(name: str) -> dict[str, Any]:
    """The tunable options of a preset and their defaults."""
    params = inspect.signature(PRESETS.get(name)).parameters
    return {k: p.default for k, p in params.items() if k not in {"size", "channels", "sample"}}


def option_problem(name: str, options: dict[str, Any]) -> str | None:
    """What is wrong with ``options`` for preset ``name`` (unknown, mistyped, out of bounds), or None."""

    return options_problem(PRESETS.get(name), options, {"size", "channels", "sample"}, f"augmentation preset {name!r}")


def build_transform(
    name: str,
    size: int,
    channels: int,
    options: dict[str, Any] | None = None,
    images: torch.Tensor | Sampler | None = None,
) -> Transform | None:
    """The per-image training transform of preset ``name``.

    Args:
        name: a registered preset.
        size, channels: the decoded images' side and channels.
        options: overrides of the preset's parameters (``preset_options``).
        images: training images (N, C, H, W) uint8, or a function returning them; only presets
            that need statistics (paintings) use them, so a function defers the gather.
    """
    options = dict(options or {})
    problem = option_problem(name, options)
    if problem:
        raise CnnlabError(problem)
    sample = images if callable(images) or images is None else (lambda: images)
    return PRESETS.get(name)(size, channels, sample, **options)


def per_image_standardize(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's per_image_standardization on a float batch: (x − μ) / max(σ, 1/√N) per image,
    μ and σ over all of an image's pixels and channels (seed 004). Written by hand: torchvision
    has no equivalent."""
    n = x[0].numel()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False).clamp_min(1.0 / n**0.5)
    return (x - mean) / std


def build_batch_transform(
    random_erasing: float, mixup: float, cutmix: float, num_classes: int, device: torch.device, multilabel: bool = False
):
    """Batch-level training augmentation on normalised batches, from timm: random erasing
    (per image, random-normal pixels) then mixup/cutmix (soft targets). None when all are off."""
    if not (random_erasing or mixup or cutmix):
        return None
    if multilabel and (mixup or cutmix):
        raise CnnlabError("mixup/cutmix need single-label data; this dataset is multi-label")
    from timm.data import Mixup
    from timm.data.random_erasing import RandomErasing

    erase = RandomErasing(probability=random_erasing, mode="pixel", device=str(device)) if random_erasing else None
    mix = (
        Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, num_classes=num_classes, label_smoothing=0.0)
        if (mixup or cutmix)
        else None
    )

    def apply(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if erase is not None:
            x = erase(x)
        if mix is not None:
            soft = torch.nn.functional.one_hot(y, num_classes).float()
            even = len(x) - len(x) % 2  # timm mixes pairs within the batch: an odd last image stays as is
            if even:
                x_even, soft_even = mix(x[:even].clone(), y[:even])
                x = torch.cat([x_even, x[even:]])
                soft = torch.cat([soft_even, soft[even:]])
            y = soft
        return x, y

    return apply
