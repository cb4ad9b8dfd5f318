from __future__ import annotations

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.models import MODELS, count_parameters, create_model


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("in_chans", [1, 3])
def test_every_model_runs_forward_and_backward(name, in_chans):
    spec = MODELS.get(name)
    size = spec.default_input_size
    model = create_model(name, num_classes=5, in_chans=in_chans, input_size=size)
    x = torch.randn(2, in_chans, size, size)
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", ["mlp", "cnn", "cnn-small"])
def test_models_take_other_sizes_and_class_counts(name):
    model = create_model(name, num_classes=3, in_chans=3, input_size=40)
    assert model(torch.randn(1, 3, 40, 40)).shape == (1, 3)


def test_cnn_small_matches_seed_001_parameter_count():
    model = create_model("cnn-small", num_classes=10, in_chans=1, input_size=28)
    assert count_parameters(model) == {"total": 310_120, "trainable": 310_120, "frozen": 0}


def test_mlp_hidden_sizes_are_configurable():
    model = create_model("mlp", num_classes=10, in_chans=1, input_size=28, hidden=[128, 128, 64])
    # seed 001's DNN 784-128-128-64-10 has 125,898 parameters
    assert count_parameters(model)["total"] == 125_898


def test_bad_model_requests_are_clear_errors():
    with pytest.raises(CnnlabError, match="unknown model 'nope'"):
        create_model("nope", num_classes=10)
    with pytest.raises(CnnlabError, match="does not take option"):
        create_model("cnn", num_classes=10, filters=7)
    with pytest.raises(CnnlabError, match="at least 4×4"):
        create_model("cnn", num_classes=10, input_size=2)
    with pytest.raises(CnnlabError, match="at least 2 classes"):
        create_model("mlp", num_classes=1)
