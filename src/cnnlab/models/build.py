"""From a config to the configured model: options, pretrained weights, freeze policy."""

from __future__ import annotations

from typing import Any

from torch import nn

from cnnlab.core.schema import Config
from cnnlab.models.factory import create_model, get_spec
from cnnlab.models.pretrained import load_matching, load_state_file
from cnnlab.models.transfer import apply_freeze


def build_model(
    cfg: Config, num_classes: int, in_chans: int, input_size: int, for_inference: bool = False
) -> nn.Module:
    """The configured model; for training also its starting weights and freeze policy.

    With ``for_inference`` (loading a checkpoint) no pretrained weights are fetched: the
    checkpoint overwrites them anyway, and this keeps evaluation offline.
    """
    m = cfg.model
    spec = get_spec(m.name)
    opts: dict[str, Any] = {
        "hidden": m.hidden,
        "dropout": m.dropout,
        "activation": m.activation,
        "init": m.init,
        "batch_norm": m.batch_norm,
        **m.options,
    }
    takes_weights = "weights" in spec.options()
    if "pretrained" in spec.options():
        opts["pretrained"] = m.pretrained and not for_inference
    if takes_weights and not for_inference:
        opts["weights"] = m.weights
    model = create_model(m.name, num_classes=num_classes, in_chans=in_chans, input_size=input_size, **opts)
    if for_inference:
        return model
    if m.weights and not takes_weights:
        load_matching(model, load_state_file(m.weights), f"model.weights {m.weights!r}")
    apply_freeze(model, "backbone" if m.fine_tune else m.freeze, m.unfreeze_last, m.train_bn_only)
    return model
