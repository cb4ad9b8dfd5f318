"""Experiment trackers (``--logger``): each epoch's figures also go to TensorBoard, MLflow or
Weights & Biases. Training is the same without them; the run folder stays the record."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

from cnnlab.core.errors import CnnlabError
from cnnlab.train.callbacks import Callback
from cnnlab.train.state import LoopState

log = logging.getLogger(__name__)

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow-skinny", "wandb": "wandb"}  # keys: core/names.py LOGGERS


def check_trackers(names: Sequence[str]) -> None:
    """Fail before training when a tracker's package is missing, naming what to install."""
    import importlib.util

    for name in names:
        module = "tensorboard" if name == "tensorboard" else name
        if importlib.util.find_spec(module) is None:
            raise CnnlabError(f"--logger {name} needs the {PACKAGES[name]} package: pip install {PACKAGES[name]}")


def tracker_callbacks(names: Sequence[str], run: Any, config: dict[str, Any]) -> list[Callback]:
    return [TRACKERS[n](run, config) for n in names]


def _scalars(logs: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in logs.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)) and k != "epoch"
    }


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
    return out


class Finished:
    """What a finished, evaluated run gives its trackers: the test figures (metrics.json), a
    confusion-matrix picture, and files to keep as artifacts (the report, metrics.json and, with
    ``run.log_checkpoint``, the best checkpoint)."""

    def __init__(self, metrics: dict[str, Any], epoch: int, confusion_png: Any | None, files: Sequence[Any]):
        self.metrics, self.epoch, self.confusion_png, self.files = metrics, epoch, confusion_png, list(files)

    def scalars(self) -> dict[str, float]:
        """test/accuracy, test/macro_f1, … and test/f1/<class> (a split other than test keeps its name)."""
        split = self.metrics.get("split", "test")
        out = {f"{split}/{k}": v for k, v in _scalars(self.metrics).items() if k != "best_epoch"}
        for c, row in (self.metrics.get("per_class") or {}).items():
            if isinstance(row, dict) and isinstance(row.get("f1"), (int, float)):
                out[f"{split}/f1/{c}"] = float(row["f1"])
        return out

    def picture(self) -> Any:
        """The confusion matrix as an (H, W, 3) uint8 array."""
        import numpy as np
        from PIL import Image

        assert self.confusion_png is not None
        with Image.open(self.confusion_png) as im:
            return np.asarray(im.convert("RGB"))


def finish_trackers(trackers: Sequence[Callback], done: Finished | None) -> None:
    """Give each tracker the evaluated run (None: training failed) and close it; a tracker that
    fails says so and leaves the run as it is (the run folder is the record)."""
    for t in trackers:
        try:
            t.finish(done)  # type: ignore[attr-defined]  # the three tracker classes below
        except Exception as e:
            log.warning("--logger %s could not record the finished run (%s: %s)", type(t).__name__, type(e).__name__, e)


class TensorBoard(Callback):
    """Event files in RUN/tensorboard: one scalar per metric per epoch (tags train/loss, val/acc, …)
    and the config as text. A resumed run continues the same curves."""

    order = 50

    def __init__(self, run: Any, config: dict[str, Any]):
        from torch.utils.tensorboard import SummaryWriter

        self.path = run.tracker_path("tensorboard")
        self.writer = SummaryWriter(log_dir=str(self.path))
        self.config = config

    def on_train_begin(self, loop: LoopState) -> None:
        import yaml

        self.writer.add_text("config", "```\n" + yaml.safe_dump(self.config, sort_keys=False) + "```", 0)

    def on_epoch_end(self, loop: LoopState, epoch: int, logs: dict[str, float]) -> None:
        for k, v in _scalars(logs).items():
            self.writer.add_scalar(k.replace("_", "/", 1) if k.startswith(("train_", "val_")) else k, v, epoch)
        self.writer.flush()

    def finish(self, done: Finished | None) -> None:
        if done is not None:
            for k, v in done.scalars().items():
                self.writer.add_scalar(k, v, done.epoch)
            if done.confusion_png is not None:
                self.writer.add_image("confusion_matrix", done.picture(), done.epoch, dataformats="HWC")
            self.writer.add_text("metrics", "```\n" + json.dumps(done.metrics, indent=1)[:60_000] + "\n```", done.epoch)
        self.writer.close()


class MLflow(Callback):
    """An MLflow run in experiment 'cnnlab' (or $MLFLOW_EXPERIMENT_NAME) of the tracking store at
    $MLFLOW_TRACKING_URI, else a local SQLite store RUN/mlflow.db (MLflow's own file store is
    retired); the config's fields as params, each epoch's figures as metrics at step = epoch."""

    order = 50

    def __init__(self, run: Any, config: dict[str, Any]):
        from mlflow.tracking import MlflowClient

        self.run = run
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run.tracker_path('mlflow').resolve()}"
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.client = MlflowClient(self.uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "cnnlab")
        exp = self.client.get_experiment_by_name(name)
        # a new experiment of the run's own store keeps its artifacts in the run (MLflow's default is ./mlruns)
        where = None if os.environ.get("MLFLOW_TRACKING_URI") else (run.path / "mlflow-artifacts").resolve().as_uri()
        exp_id = exp.experiment_id if exp else self.client.create_experiment(name, artifact_location=where)
        previous = (run.status() if run.run_json.is_file() else {}).get("mlflow_run_id")
        if previous:  # a resumed run goes on in the same MLflow run
            self.run_id = previous
        else:
            self.run_id = self.client.create_run(exp_id, run_name=run.path.name).info.run_id
            params = _flat(config)
            for i in range(0, len(params), 100):
                chunk = list(params.items())[i : i + 100]
                self.client.log_batch(self.run_id, params=[_param(k, v) for k, v in chunk])
            run.update_status(mlflow_run_id=self.run_id, mlflow_tracking_uri=self.uri)

    def on_epoch_end(self, loop: LoopState, epoch: int, logs: dict[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, epoch) for k, v in _scalars(logs).items()])

    def finish(self, done: Finished | None) -> None:
        from mlflow.entities import Metric

        if done is None:
            self.client.set_terminated(self.run_id, "FAILED")
            return
        stamp = int(time.time() * 1000)
        metrics = [Metric(k.replace("/", "_", 1), v, stamp, done.epoch) for k, v in done.scalars().items()]
        for i in range(0, len(metrics), 500):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 500])
        for f in [done.confusion_png, *done.files]:
            if f is not None:
                self.client.log_artifact(self.run_id, str(f))
        self.client.set_terminated(self.run_id, "FINISHED")


def _param(key: str, value: Any) -> Any:
    from mlflow.entities import Param

    return Param(key, str(value)[:6000])


class WandB(Callback):
    """A Weights & Biases run written under RUN/wandb, offline unless $WANDB_MODE says otherwise
    (sync it later with `wandb sync`)."""

    order = 50

    def __init__(self, run: Any, config: dict[str, Any]):
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "cnnlab"),
            name=run.path.name,
            dir=str(run.tracker_path("wandb")),
            config=config,
            mode=cast(Any, os.environ.get("WANDB_MODE", "offline")),  # wandb checks the value
            reinit="finish_previous",
        )

    def on_epoch_end(self, loop: LoopState, epoch: int, logs: dict[str, float]) -> None:
        self.run.log(_scalars(logs), step=epoch)

    def finish(self, done: Finished | None) -> None:
        if done is None:
            self.run.finish(exit_code=1)
            return
        self.run.summary.update(done.scalars())
        if done.confusion_png is not None:
            self.run.log({"confusion_matrix": self.wandb.Image(str(done.confusion_png))}, step=done.epoch)
        art = self.wandb.Artifact(f"{self.run.name}-results", type="run-results")
        for f in done.files:
            art.add_file(str(f))
        self.run.log_artifact(art)
        self.run.finish()


# each name of core/names.py's LOGGERS → its callback (a test checks the keys)
TRACKERS: dict[str, Callable[[Any, dict[str, Any]], Callback]] = {
    "tensorboard": TensorBoard,
    "mlflow": MLflow,
    "wandb": WandB,
}
