"""Issue 26, transfer at full size: a batch goes through in slices when its activations would be
large — the same step where no layer mixes images — and large-image inference is sliced too."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cnnlab.core.errors import CnnlabError
from cnnlab.models.factory import create_model
from cnnlab.models.ops import activation_bytes, inference_slice, predict_logits
from cnnlab.models.transfer import bn_to_eval
from cnnlab.train.engines.torch_engine import micro_batch
from cnnlab.train.losses import SingleLabel, balanced_class_weights
from cnnlab.train.trainer import Trainer
from cnnlab.workflows.resolve import build_config


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 8 * 8, 5))  # fmt: skip


@pytest.mark.parametrize("weighted", [False, True])
def test_a_sliced_step_is_the_whole_batch_step_when_batchnorm_keeps_its_statistics(weighted):
    x, y = torch.randn(24, 3, 8, 8), torch.randint(0, 5, (24,))
    task = SingleLabel(balanced_class_weights(torch.bincount(y, minlength=5).numpy() + 1) if weighted else None)
    after = []
    for slice_ in (None, 5):  # 24 images as 5 + 5 + 5 + 5 + 4
        model = _net()
        model.train()
        bn_to_eval(model)
        t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.device("cpu"), task=task)
        t.micro_batch = slice_
        loss, correct = t.train_step(x, y)
        after.append((copy.deepcopy(model.state_dict()), loss, correct))
    for k, v in after[0][0].items():
        assert torch.allclose(v, after[1][0][k], atol=1e-6), k
    assert after[0][1] == pytest.approx(after[1][1], rel=1e-5) and after[0][2] == after[1][2]


def test_slices_are_chosen_for_a_fine_tune_at_224_px_and_refused_where_batchnorm_mixes_images():
    lite = create_model("efficientnet-lite0", num_classes=10, in_chans=3, input_size=224, pretrained=False)
    per_image = activation_bytes(lite, 3, 224)
    assert 60 * 2**20 < per_image < 140 * 2**20  # ~96 MB an image (a measured step: 79 MB)
    cfg = build_config({"data": {"source": "digits"}, "model": {"name": "efficientnet-lite0"}})
    assert micro_batch(cfg, lite, 3, 224, bn_kept=True) == 16  # 1.5 GB of ~96 MB images
    assert micro_batch(cfg, lite, 3, 224, bn_kept=False) is None  # BatchNorm in train mode: never sliced
    small = build_config({"data": {"source": "digits"}, "model": {"name": "cnn"}})
    assert micro_batch(small, create_model("cnn", 10, 1, 28), 1, 28, bn_kept=False) is None  # fits whole
    asked = build_config({"data": {"source": "digits"}, "model": {"name": "cnn"}, "train": {"micro_batch": 32}})
    assert micro_batch(asked, create_model("cnn", 10, 1, 28), 1, 28, bn_kept=False) == 32
    # on a CPU, passes near the cache (<= 80 MB, at least 16 images, of even size): triple at 64 px is 2 MB an image
    triple = build_config({"data": {"source": "digits"}, "model": {"name": "triple"}, "train": {"batch_size": 128}})
    net = create_model("triple", 10, 1, 64)
    assert micro_batch(triple, net, 1, 64, bn_kept=False, on_cpu=True) == 32
    odd = build_config({"data": {"source": "digits"}, "model": {"name": "triple"}, "train": {"batch_size": 100}})
    assert micro_batch(odd, net, 1, 64, bn_kept=False, on_cpu=True) == 34  # 3 passes: 34, 34, 32
    assert micro_batch(triple, net, 1, 64, bn_kept=False) is None  # a GPU: the memory budget only
    assert micro_batch(cfg, lite, 3, 224, bn_kept=True, on_cpu=True) == 16  # never below 16 images
    assert micro_batch(small, create_model("cnn", 10, 1, 28), 1, 28, bn_kept=False, on_cpu=True) is None
    with pytest.raises(CnnlabError, match="BatchNorm layers normalise over the images of a pass"):
        micro_batch(asked, _net(), 3, 8, bn_kept=False)


def test_large_image_inference_is_sliced_to_the_same_logits():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(64, 4)).eval()  # fmt: skip
    x = torch.randn(40, 3, 96, 96)
    step = inference_slice(model, x)
    assert 1 <= step < 40 and step == int(48 * 2**20 // (3 * 64 * 96 * 96 * 4))  # the CPU's cache budget
    sliced, _ = predict_logits(model, [(x, torch.zeros(40))])
    with torch.no_grad():
        whole = model(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(sliced, whole, atol=1e-5)


def test_a_built_in_set_is_converted_once_per_process_and_changed_pixels_are_converted_again(idx_dir):
    """Issue 26: a sweep worker's trials share one conversion of a built-in's arrays to their size
    (1.7 s of a 2.4 s trial start on Fashion-MNIST at 64 px); changed files are a new conversion."""
    import numpy as np

    from cnnlab.data import pipeline

    cfg = build_config({"data": {"source": "fashion-mnist", "data_dir": str(idx_dir), "input_size": 20}}).data
    a = pipeline.load_source(cfg, 20, 1)
    b = pipeline.load_source(cfg, 20, 1)
    assert a.images is b.images and a.images.shape[1:] == (1, 20, 20)
    assert pipeline.content_of(a) == pipeline.content_digest(memoryview(np.ascontiguousarray(a.images)).cast("B"))
    assert pipeline.load_source(cfg, 24, 1).images.shape[-1] == 24  # another size: converted anew
    from tests.conftest import write_idx

    write_idx(idx_dir, seed=1)  # other pixels under the same names
    c = pipeline.load_source(cfg, 20, 1)
    assert c.images is not a.images and not np.array_equal(c.images, a.images)
