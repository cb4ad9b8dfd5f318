"""Training craft: gradient accumulation, gradient clipping, label smoothing, a wall-clock budget."""

from __future__ import annotations

import csv
import json
import time

import pytest
import torch

from cnnlab import api
from cnnlab.cli import main
from cnnlab.core.errors import CnnlabError
from cnnlab.inference.exported import ExportedModel
from cnnlab.runs.store import RunFolder
from cnnlab.train.callbacks import Callback
from cnnlab.train.losses import SingleLabel
from cnnlab.train.trainer import Trainer
from cnnlab.workflows.resolve import build_config


def weights(run) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def digits(out, **extra):
    return build_config(
        None,
        {"data.source": "digits", "model.name": "mlp", "train.threads": 1, "run.out": str(out), "run.report": False,
         "train.schedule": "constant", "optim.lr": 0.003, **extra},
    )  # fmt: skip


def test_accumulating_4_batches_of_32_takes_the_steps_of_batches_of_128(tmp_path):
    """train.accumulate 4 at batch 32: after 10 optimizer steps the weights are those of batch 128
    (a net without BatchNorm; Adam, so any error in the gradients' scale would show)."""
    steps = {"train.steps": 10, "train.eval_every": 10}
    big = api.train(digits(tmp_path / "big", **steps, **{"train.batch_size": 128}), progress=False)
    acc = api.train(
        digits(tmp_path / "acc", **steps, **{"train.batch_size": 32, "train.accumulate": 4}), progress=False
    )
    wb, wa = weights(big.run), weights(acc.run)
    assert max(float((wb[k] - wa[k]).abs().max()) for k in wb) <= 1e-5
    plain = api.train(digits(tmp_path / "plain", **steps, **{"train.batch_size": 32}), progress=False)
    assert max(float((wb[k] - weights(plain.run)[k]).abs().max()) for k in wb) > 1e-3  # batch 32 alone differs
    assert json.loads((acc.run / "run.json").read_text()).get("micro_batch") == 32  # 4 passes a step


def test_accumulate_counts_epochs_in_its_steps_and_refuses_what_it_cannot_do(tmp_path):
    class Steps(Callback):
        def on_train_end(self, loop):
            self.steps = loop.global_step

    cfg = digits(tmp_path / "r", **{"train.batch_size": 32, "train.accumulate": 4, "train.epochs": 1})
    counted = Steps()
    res = api.train(cfg, callbacks=[counted], progress=False)
    n_train = len(RunFolder(res.run).read_split()["indices"]["train"])
    assert counted.steps == -(-n_train // 128)  # optimizer steps of 4 x 32 images
    with pytest.raises(CnnlabError, match="not both"):
        digits(tmp_path / "x", **{"train.accumulate": 2, "train.micro_batch": 16})
    with pytest.raises(CnnlabError, match="train.accumulate.*scratch"):
        api.train(digits(tmp_path / "s", **{"train.engine": "scratch", "train.accumulate": 2}), progress=False)


def test_clipping_bounds_the_gradients_norm_before_the_step():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    t = Trainer(model, opt, torch.device("cpu"), channels_last=False)
    t.clip_grad = 0.01
    before = [p.detach().clone() for p in model.parameters()]
    t.train_step(torch.randn(16, 8) * 100, torch.randint(0, 3, (16,)))
    moved = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert float(moved.norm()) == pytest.approx(0.01, rel=1e-4)  # SGD lr 1: the step is the clipped gradient


def test_label_smoothing_changes_the_training_loss_only():
    logits, y = torch.tensor([[4.0, 0.0, 0.0]]), torch.tensor([0])
    task = SingleLabel(label_smoothing=0.3)
    plain = torch.nn.functional.cross_entropy(logits, y)
    assert float(task.loss(logits, y)) == pytest.approx(float(plain))  # validation: plain cross-entropy
    logp = torch.log_softmax(logits, 1)[0]
    target = torch.tensor([0.7 + 0.1, 0.1, 0.1])
    assert float(task.train_loss(logits, y)) == pytest.approx(float(-(target * logp).sum()), rel=1e-6)
    soft = torch.tensor([[0.5, 0.5, 0.0]])  # a mixup target is smoothed the same way
    want = -(((1 - 0.3) * soft[0] + 0.1) * logp).sum()
    assert float(task.train_loss(logits, soft)) == pytest.approx(float(want), rel=1e-6)


def test_label_smoothing_trains_and_is_refused_for_multi_label_data(tmp_path):
    res = api.train(digits(tmp_path / "ls", **{"train.label_smoothing": 0.1, "train.epochs": 2}), progress=False)
    assert res.metrics["accuracy"] > 0.8
    assert RunFolder(res.run).read_config().train.label_smoothing == 0.1


def test_time_budget_stops_at_an_epoch_end_and_leaves_an_evaluated_run(tmp_path, capsys):
    """--time 3s on digits with 200 epochs planned: it stops at an epoch end within 3 s + one
    epoch, says why, and the run is completed and evaluated on its best checkpoint."""
    out = tmp_path / "t"
    started = time.time()
    code = main(["train", "--data", "digits", "--model", "mlp", "--epochs", "200", "--time", "3s", "--threads", "1",
                 "--no-report", "--out", str(out), "-q"])  # fmt: skip
    assert code == 0
    status = RunFolder(out).status()
    assert status["status"] == "completed" and "--time budget of 3 s" in status["stop_reason"]
    assert 1 <= status["epochs_done"] < 200
    per_epoch = status["train_seconds"] / status["epochs_done"]
    assert status["train_seconds"] <= 3 + per_epoch + 0.5  # within the budget and one epoch
    assert json.loads((out / "metrics.json").read_text())["split"] == "test"
    assert time.time() - started < 60
    # the default one-cycle, planned for 200 epochs, was re-planned after the first to end with the
    # budget: it peaked at its 3e-3 and annealed to (nearly) nothing by the last epoch run
    lrs = [float(r["lr"]) for r in csv.DictReader((out / "history.csv").open())]
    assert len(lrs) >= 8 and max(lrs) == pytest.approx(3e-3, rel=0.1) and lrs[-1] < 0.05 * max(lrs), lrs
    with pytest.raises(CnnlabError, match="duration"):
        build_config(None, {"data.source": "digits", "train.time": "soon"})


def test_tta_averages_the_named_views_only_and_is_reported_beside_the_plain_figures(tmp_path, capsys):
    import numpy as np

    from cnnlab.inference.predictor import Predictor, tta_views

    out = tmp_path / "run"
    api.train(digits(out, **{"model.name": "cnn", "train.epochs": 2, "optim.lr": 0.003}), progress=False)
    x = torch.randn(5, 1, 8, 8)
    flips = tta_views(x, "flips")
    assert len(flips) == 2 and torch.equal(flips[0], x) and torch.equal(flips[1], x.flip(-1))
    crops = tta_views(x, "flips+crops")
    assert len(crops) == 6 and all(v.shape == x.shape for v in crops)
    assert torch.equal(crops[2][..., 1:, 1:], x[..., :-1, :-1])  # the top-left crop: shifted S/8 = 1 px down-right
    assert torch.equal(crops[5][..., :-1, :-1], x[..., 1:, 1:])  # the bottom-right one: 1 px up-left
    plain, tta = Predictor.from_run(out, "cpu"), Predictor.from_run(out, "cpu", tta="flips")
    images = (np.random.default_rng(0).random((4, 1, 8, 8)) * 255).astype(np.uint8)
    t = torch.from_numpy(plain.preprocess.normalize_array(images))
    with torch.no_grad():
        want = torch.softmax((plain.model(t) + plain.model(t.flip(-1))) / 2, 1).numpy()
    assert np.allclose(tta.probs_of_arrays(images), want, atol=1e-6)
    assert not np.allclose(plain.probs_of_arrays(images), want, atol=1e-3)  # the mirror images did count

    assert main(["evaluate", str(out), "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(out), "--tta", "flips", "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["tta"]["views"] == "flips" and 0 < after["tta"]["accuracy"] <= 1
    assert after["accuracy"] == before["accuracy"] and after["log_loss"] == before["log_loss"]  # plain stays
    assert main(["evaluate", str(out), "--tta", "flips"]) == 0
    assert "with TTA (flips): accuracy" in capsys.readouterr().out
    with pytest.raises(CnnlabError, match="--tta scores the run's own split"):
        api.evaluate(out, api.EvaluateSettings.of(data=["digits"], tta="flips"), progress=False)


def test_a_trained_run_leaves_its_confusion_matrix_and_report_in_its_trackers(tmp_path):
    """Through `cnnlab train --logger tensorboard,mlflow`: the event file holds the
    confusion-matrix picture and the test figures, MLflow's store the report and metrics.json."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--logger", "tensorboard,mlflow",
                 "--out", str(out), "-q"]) == 0  # fmt: skip
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert events.Images("confusion_matrix") and "test/accuracy" in events.Tags()["scalars"]
    status = RunFolder(out).status()
    client = MlflowClient(status["mlflow_tracking_uri"])
    arts = {a.path for a in client.list_artifacts(status["mlflow_run_id"])}
    assert {"report.html", "metrics.json", "confusion_matrix.png"} <= arts
    back = client.download_artifacts(status["mlflow_run_id"], "metrics.json", str(tmp_path / "back"))
    assert json.loads(open(back).read())["accuracy"] == json.loads((out / "metrics.json").read_text())["accuracy"]


def test_the_weight_average_follows_its_formula_with_warm_up():
    """w_ema after each step equals the hand-computed average: decay min(d, (1 + t) / (10 + t))."""
    from cnnlab.train.ema import WeightEMA

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    t = Trainer(model, opt, torch.device("cpu"), channels_last=False)
    t.ema = WeightEMA(model, decay=0.9)
    expected = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    for step in range(6):
        t.train_step(torch.randn(8, 4), torch.randint(0, 3, (8,)))
        d = 0.0 if step == 0 else min(0.9, (1 + step) / (10 + step))  # the first update copies
        now = model.state_dict()
        expected = {k: d * e + (1 - d) * now[k] for k, e in expected.items()}
    avg = t.ema.weights()
    assert max(float((avg[k] - e).abs().max()) for k, e in expected.items()) < 1e-6
    assert any(float((avg[k] - model.state_dict()[k]).abs().max()) > 1e-3 for k in expected)  # not the weights
    assert int(avg["1.num_batches_tracked"]) == 6  # counters are the model's own
    with t.judged():  # validation sees the average, then the model gets its own weights back
        assert torch.equal(model.state_dict()["0.weight"], avg["0.weight"])
    assert not torch.equal(model.state_dict()["0.weight"], avg["0.weight"])


def test_an_ema_run_judges_and_keeps_the_average_and_says_so(tmp_path, capsys):
    """train.ema: the validation figures are the average's, best.pt holds it (last.pt both), evaluate,
    metrics.json and an exported file say which weights they are; resume continues the average."""
    cfg = digits(tmp_path / "ema", **{"train.epochs": 3, "train.ema": 0.99, "train.batch_size": 64})
    res = api.train(cfg, progress=False)
    best = torch.load(res.run / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(res.run / "checkpoints" / "last.pt", weights_only=True)
    avg = {k.removeprefix("module."): v for k, v in last["ema"]["average"].items() if k.startswith("module.")}
    assert best["epoch"] == 3 and all(torch.equal(best["model"][k], avg[k]) for k in avg)
    assert any(not torch.equal(last["model"][k], avg[k]) for k in avg)  # the trained weights differ
    metrics = json.loads((res.run / "metrics.json").read_text())
    assert metrics["weights"] == "EMA of the weights (decay 0.99)"
    row = next(h for h in res.history if h["epoch"] == metrics["best_epoch"])
    val = api.evaluate(res.run, api.EvaluateSettings(split="val"), progress=False).figures
    assert val["accuracy"] == pytest.approx(row["val_acc"])  # validation judged the weights best.pt keeps
    assert main(["export", str(res.run), "--out", str(tmp_path / "m.onnx")]) == 0
    assert ExportedModel.load(tmp_path / "m.onnx").meta["weights"] == metrics["weights"]
    assert main(["evaluate", str(res.run)]) == 0
    out = capsys.readouterr().out
    assert "batch dynamic; EMA of the weights (decay 0.99)" in out and "(EMA of the weights (decay 0.99)):" in out

    # an interrupted run resumes to the same average as the uninterrupted one
    class StopAfter(Callback):
        def on_batch_end(self, loop, step, logs):
            if loop.epoch == 1 and step == 3:
                raise KeyboardInterrupt

    part = digits(tmp_path / "part", **{"train.epochs": 3, "train.ema": 0.99, "train.batch_size": 64})
    with pytest.raises(KeyboardInterrupt):
        api.train(part, callbacks=[StopAfter()], progress=False)
    api.train(None, api.TrainPlan(resume=tmp_path / "part"), progress=False)
    resumed = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=True)["ema"]["average"]
    assert all(torch.equal(resumed[k], v) for k, v in last["ema"]["average"].items())
    with pytest.raises(CnnlabError, match="train.ema.*scratch"):
        api.train(digits(tmp_path / "s", **{"train.engine": "scratch", "train.ema": 0.9}), progress=False)


@pytest.mark.parametrize(
    ("per_image", "cap", "expected"),
    [(1.0, 4096, 64), (0.3, 4096, 256), (0.3, 100, 64), (40.0, 4096, 2), (80.0, 4096, 1), (200.0, 4096, None)],
)
def test_auto_batch_finds_the_largest_power_of_two_that_fits(per_image, cap, expected):
    """A simulated device: a batch's step needs 20 MB plus per_image MB and fits under 100 MB."""
    from cnnlab.train.batchsize import largest_fitting

    tried: list[int] = []

    def fits(b: int) -> bool:
        tried.append(b)
        return 20 + per_image * b <= 100

    assert largest_fitting(fits, cap) == expected
    assert all(b & (b - 1) == 0 and b <= cap for b in tried) and len(tried) <= 10


def test_batch_size_auto_on_a_cpu_says_it_keeps_the_default(tmp_path, caplog):
    import logging

    import yaml

    assert build_config({"train": {"batch_size": "auto"}}).train.auto_batch
    caplog.set_level(logging.INFO)
    out = tmp_path / "auto"
    argv = ["train", "--data", "digits", "--model", "mlp", "--epochs", "1", "--batch-size", "auto", "--out", str(out)]
    assert main([*argv, "--no-report", "--set", "train.threads=1"]) == 0
    assert "--batch-size auto: on cpu memory is not what limits a batch; keeping 128" in caplog.text
    saved = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert saved["batch_size"] == 128 and saved["auto_batch"] is True


@pytest.mark.skipif(not torch.cuda.is_available(), reason="--batch-size auto searches on a GPU")
def test_batch_size_auto_on_a_gpu_finds_a_power_of_two_that_trains(tmp_path):
    res = api.train(digits(tmp_path / "g", **{"train.epochs": 1, "train.device": "cuda", "train.batch_size": "auto"}),
                    progress=False)  # fmt: skip
    b = RunFolder(res.run).read_config().train.batch_size
    assert b & (b - 1) == 0 and 16 <= b <= 1024  # digits' training split caps it
