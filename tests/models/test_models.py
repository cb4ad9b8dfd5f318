from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.core.errors import CnnlabError
from cnnlab.models import MODELS, count_parameters, create_model


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("in_chans", [1, 3])
def test_every_model_runs_forward_and_backward(name, in_chans):
    spec = MODELS.get(name)
    size = max(spec.min_input_size, 32)  # every family at a small size keeps this test fast
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
    # seed 001's Keras variants on CIFAR-10 (32×32×3): 32 filters 3×3, and conv 5×5×5 → pool → conv 3×3×3 → pool
    wide = create_model("cnn-small", num_classes=10, in_chans=3, input_size=32, filters=32)
    assert count_parameters(wide)["total"] == (3 * 9 + 1) * 32 + (32 * 32 * 32 + 1) * 128 + 129 * 64 + 65 * 10
    two = create_model("cnn-small", num_classes=10, in_chans=3, input_size=32, filters=[5, 3], kernels=[5, 3],
                       pool=True)  # fmt: skip
    assert two(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(two)["total"] == (75 + 1) * 5 + (45 + 1) * 3 + (3 * 8 * 8 + 1) * 128 + 129 * 64 + 650
    with pytest.raises(CnnlabError, match="pool: true or false"):
        create_model("cnn-small", num_classes=10, in_chans=1, input_size=28, pool="yes")


def test_seed_004_parameter_counts_at_224x224x3_and_5_classes():
    counts = {
        n: count_parameters(create_model(n, num_classes=5, in_chans=3, input_size=224))["trainable"]
        for n in ("vgg-bn", "resnet29", "mobilenetv2-small")
    }
    assert counts["vgg-bn"] == 6_625_101  # seed 004 §2.1, exactly
    assert counts["resnet29"] == 4_088_837  # seed 004 §3.3, exactly
    # seed 004 §4.4 reports 642,709; its printed table (t=6 in every bottleneck, Conv1-160, GAP,
    # FC-5) gives 555,013 without conv biases (563,173 with them) — see README, "Models"
    assert counts["mobilenetv2-small"] == 555_013


def test_model_options_vary_activation_init_and_batch_norm():
    import torch.nn as nn

    tanh = create_model("triple-tanh", num_classes=3, in_chans=1, input_size=32)
    assert any(isinstance(m, nn.Tanh) for m in tanh.modules())
    elu = create_model("cnn", num_classes=3, in_chans=1, input_size=28, activation="elu", batch_norm=True)
    assert any(isinstance(m, nn.ELU) for m in elu.modules()) and any(
        isinstance(m, nn.BatchNorm2d) for m in elu.modules()
    )
    prelu = create_model("vgg-bn", num_classes=5, in_chans=3, input_size=32)
    assert sum(isinstance(m, nn.PReLU) for m in prelu.modules()) == 2
    torch.manual_seed(0)
    he = create_model("mlp", num_classes=10, in_chans=1, input_size=28, init="he")
    w = he.features[1].weight.detach()
    assert abs(float(w.std()) - (2 / 784) ** 0.5) < 0.005  # He: N(0, √(2/n))
    six = create_model("mobilenetv2-small", num_classes=5, in_chans=3, input_size=32)
    assert any(isinstance(m, nn.ReLU6) for m in six.modules())


def test_mlp_hidden_sizes_are_configurable():
    model = create_model("mlp", num_classes=10, in_chans=1, input_size=28, hidden=[128, 128, 64])
    # seed 001's DNN 784-128-128-64-10 has 125,898 parameters
    assert count_parameters(model)["total"] == 125_898


def test_the_default_net_is_cnn_bn_with_its_own_recipe_length():
    """Issue 26 (a faster default net, chosen by benchmarks/race.py): cnn-bn is the default model,
    98,666 parameters at 28 px grey; the default recipe's cycle is set per net in steps: on
    Fashion-MNIST's 54,000 training images at batch 128 (422 steps an epoch) cnn-bn trains 2
    epochs, mlp 4 and a net without its own length (cnn) 3."""
    from cnnlab.core.schema import ModelConfig
    from cnnlab.train.build import resolve_recipe
    from cnnlab.workflows.resolve import build_config

    assert ModelConfig().name == "cnn-bn"
    net = create_model("cnn-bn", num_classes=10, in_chans=1, input_size=28)
    assert sum(p.numel() for p in net.parameters()) == 98_666
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 3
    epochs = {name: resolve_recipe(build_config(None, {"model.name": name}), 54_000).train.epochs
              for name in ("cnn-bn", "mlp", "cnn")}  # fmt: skip
    assert epochs == {"cnn-bn": 2, "mlp": 4, "cnn": 3}
    with pytest.raises(CnnlabError, match="8 px is too small|at least 8"):
        create_model("cnn-bn", num_classes=10, input_size=4)


def test_bad_model_requests_are_clear_errors():
    with pytest.raises(CnnlabError, match="unknown model 'nope'"):
        create_model("nope", num_classes=10)
    with pytest.raises(CnnlabError, match="does not take option"):
        create_model("cnn", num_classes=10, pool=7)
    with pytest.raises(CnnlabError, match="at least 4×4"):
        create_model("cnn", num_classes=10, input_size=2)
    with pytest.raises(CnnlabError, match="at least 2 classes"):
        create_model("mlp", num_classes=1)


def test_the_triple_cnn_takes_filters_and_kernels_and_the_reports_setting_has_its_parameter_count(tmp_path):
    """Issue 25, item 2: seed 000's TripleV2 has "nearly 660,000 parameters, almost 550,000 in the
    fully connected layers" (64 px grey); filters 32,64,64,64 with dense 512-64 gives 652,234, 558,282
    of them dense (docs/results.md). Set from a config's model.options, as a user would."""
    from cnnlab.core.errors import CnnlabError
    from cnnlab.train.build import build_model
    from cnnlab.workflows.resolve import build_config

    cfg = build_config(
        {"model": {"name": "triple-tanh", "hidden": [512, 64], "options": {"filters": [32, 64, 64, 64]}}}, {}
    )
    model = build_model(cfg, 10, 1, 64)
    dense = sum(p.numel() for m in model.modules() if isinstance(m, nn.Linear) for p in m.parameters())
    assert count_parameters(model)["total"] == 652_234 and dense == 558_282
    assert count_parameters(create_model("triple", num_classes=10, in_chans=1, input_size=64))["total"] == 406_794
    k5 = create_model("triple", num_classes=10, in_chans=1, input_size=64, kernels=[5, 5, 5, 5])
    assert [m.kernel_size for m in k5.modules() if isinstance(m, nn.Conv2d)] == [(5, 5)] * 4
    with pytest.raises(CnnlabError, match="one kernel size per conv"):
        create_model("triple", num_classes=10, in_chans=1, input_size=64, kernels=[3, 3])
    for bad in ({"filters": "5"}, {"filters": [10**7] * 4}, {"kernels": [0, 1, 1, 1]}, {"filters": [float("nan")] * 4},
                {"filters": [True] * 4}, {"kernels": [99] * 4}):  # fmt: skip
        with pytest.raises(CnnlabError, match="model options filters/kernels"):
            create_model("triple", num_classes=10, in_chans=1, input_size=64, **bad)
    with pytest.raises(CnnlabError, match="too small"):
        create_model("triple", num_classes=10, in_chans=1, input_size=64, filters=[8] * 7, kernels=[3] * 7)
