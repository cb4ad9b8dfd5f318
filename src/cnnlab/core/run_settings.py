"""The settings of the commands that read or put to work a finished run — evaluate, explain,
predict, export, serve and the board — as typed models whose flags are generated (as
``core/settings.py``'s are for the workflows that train). Pure data."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from cnnlab.core.names import TtaView
from cnnlab.core.schema import TrainConfig
from cnnlab.core.settings import Settings, config_default

__all__ = [
    "BindSettings",
    "BoardSettings",
    "EvaluateSettings",
    "ExplainSettings",
    "ExportSettings",
    "PredictSettings",
    "ServeSettings",
]


# fields several commands share, written once


def _device(default: str, what: str | None = None) -> Any:
    return Field(
        default, description=what or f"for a run folder (default {default})", json_schema_extra={"metavar": "DEV"}
    )


def _tta(more: str = "") -> Any:
    return Field("none", description="test-time augmentation for a run folder: logits averaged over the image, its "
                 "mirror image and, with crops, four shifted crops" + more)  # fmt: skip


def _trust_torchscript() -> Any:
    return Field(
        False, description="load a TorchScript file not exported by cnnlab on this machine (it runs code when loaded)"
    )


class EvaluateSettings(Settings):
    """`cnnlab evaluate RUN`: on which data and split, with which extras (the checkpoint is the run's best)."""

    data: list[str] | None = Field(
        None,
        description="evaluate on all images of another dataset (repeat for a table of several)",
        json_schema_extra={"metavar": "NAME|DIR", "action": "append"},
    )
    retrieval: bool = Field(
        False,
        description="with --data: within- and cross-dataset retrieval (mAP, precision at --top-k) of penultimate "
        "features",
    )
    top_k: int = Field(10, ge=1, description="retrieval precision at K", json_schema_extra={"metavar": "K"})
    keep_head: bool = Field(
        False,
        description="score the pretrained net the run started from with its own output layer (seed 002's "
        "baseline): top-1/top-5, its classes mapped onto the data's by --label-map (or by name); unmapped ones "
        "count as wrong",
    )
    label_map: str | None = Field(
        None,
        description="with --keep-head: lines 'net class,dataset class' (index, name or synonym)",
        json_schema_extra={"metavar": "CSV"},
    )
    data_dir: str | None = Field(
        None, description="where --data's files are, for built-ins", json_schema_extra={"metavar": "DIR"}
    )
    split: Literal["train", "val", "test"] | None = Field(
        None,
        description="train, val or test of the run's own data (default test); with --data, that split of each "
        "dataset under the run's split settings (default: all its images)",
    )
    batch_size: int = Field(256, ge=1, description="evaluation batch size", json_schema_extra={"metavar": "N"})
    tta: TtaView = _tta("; the figures are printed beside the plain ones")
    max_pixels: int | None = Field(
        None,
        ge=1,
        description="pixel budget per image of --data (default: the run's)",
        json_schema_extra={"metavar": "N"},
    )
    device: str = _device(config_default(TrainConfig, "device"), "auto, cpu, cuda, cuda:N, mps")

    @model_validator(mode="after")
    def _consistent(self) -> EvaluateSettings:
        if self.tta != "none" and (self.data or self.keep_head or self.retrieval):
            raise ValueError("--tta scores the run's own split; leave out --data, --keep-head and --retrieval")
        if self.label_map and not self.keep_head:
            raise ValueError("--label-map goes with --keep-head")
        if self.keep_head and self.retrieval:
            raise ValueError("--keep-head scores the net's own classes; retrieval goes without it")
        if self.retrieval and not self.data:
            raise ValueError("--retrieval needs datasets: add --data A [--data B ...]")
        return self


class PredictSettings(Settings):
    """`cnnlab predict RUN_OR_MODEL PATH…`: where the predictions go, how many classes each, how it runs."""

    out: str | None = Field(
        None, description="write all predictions to a .csv or .jsonl file", json_schema_extra={"metavar": "FILE"}
    )
    top_k: int = Field(3, ge=1, description="classes per image", json_schema_extra={"metavar": "K"})
    batch_size: int = Field(64, ge=1, description="images per batch", json_schema_extra={"metavar": "N"})
    max_pixels: int | None = Field(
        None,
        ge=1,
        description="pixel budget per image (default: the run's); larger JPEGs are decoded downscaled",
        json_schema_extra={"metavar": "N"},
    )
    device: str = _device(config_default(TrainConfig, "device"))
    trust_torchscript: bool = _trust_torchscript()
    tta: TtaView = _tta()
    collect: bool = Field(False, description="print results as one JSON list", json_schema_extra={"flag": "--json"})


class ExportSettings(Settings):
    """`cnnlab export RUN`: which format, where, and how strict its parity check against PyTorch is."""

    format: Literal["onnx", "torchscript"] = Field("onnx", description="onnx (opset 18) or torchscript")
    out: str | None = Field(
        None, description="default RUN/export/model.onnx (or model.ts)", json_schema_extra={"metavar": "FILE"}
    )
    with_preprocessing: bool = Field(
        False, description="normalisation inside the graph: the model takes uint8 pixels (N, C, H, W)"
    )
    tolerance: float = Field(
        1e-4, gt=0, description="largest |Δprob| allowed against PyTorch", json_schema_extra={"metavar": "X"}
    )
    min_agreement: float = Field(
        0.999, description="smallest share of identical top-1 classes", json_schema_extra={"metavar": "X"}
    )
    check_images: int | None = Field(
        None,
        ge=1,
        description="check on the first N test images only (default all)",
        json_schema_extra={"metavar": "N"},
    )
    check: bool = Field(
        True, description="skip the parity check (not recommended)", json_schema_extra={"flag": "--no-check"}
    )

    @field_validator("min_agreement")
    @classmethod
    def _share(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError("a share of images, above 0 and at most 1")
        return v


class BindSettings(Settings):
    """Where a local service listens and who may reach it (`cnnlab serve`, `cnnlab board`)."""

    host: str = Field("127.0.0.1", description="address to bind")
    token: str | None = Field(
        None,
        description="require 'Authorization: Bearer SECRET' on every request (default $CNNLAB_TOKEN)",
        json_schema_extra={"metavar": "SECRET"},
    )
    no_auth: bool = Field(False, description="serve a non-local address without a token")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="the server's log level"
    )


class ServeSettings(BindSettings):
    """`cnnlab serve RUN_OR_MODEL`: where it listens, who may call it, and the bounds of one request."""

    port: int = Field(8000, ge=1, le=65535, description="port", json_schema_extra={"metavar": "PORT"})
    max_upload_mb: float = Field(
        10.0, gt=0, description="largest request body, in MB", json_schema_extra={"metavar": "MB"}
    )
    max_pixels: int = Field(
        16_000_000,
        ge=1,
        description="pixel budget per image; larger JPEGs are decoded downscaled",
        json_schema_extra={"metavar": "N", "shown": "16,000,000"},
    )
    device: str = _device("cpu")
    decode_memory_mb: float = Field(
        512.0,
        gt=0,
        description="memory all image decodes in flight may hold together, in MB; a larger image waits its turn, one "
        "that alone needs more gets 413",
        json_schema_extra={"metavar": "MB"},
    )
    body_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds a client may send nothing of its upload before it gets 408",
        json_schema_extra={"metavar": "S"},
    )
    allowed_host: list[str] | None = Field(
        None,
        description="a Host name clients may use besides localhost/127.0.0.1/::1 (repeatable); requests naming "
        "another host get 403, which keeps web pages elsewhere from reaching a local service",
        json_schema_extra={"metavar": "NAME", "action": "append"},
    )
    trust_torchscript: bool = _trust_torchscript()
    tta: TtaView = _tta()


class BoardSettings(BindSettings):
    """`cnnlab board [ROOT]`: which folder, and where the page listens."""

    root: str = Field(".", description="the folder whose runs, sweeps, CVs and studies are shown",
                      json_schema_extra={"flag": "ROOT", "metavar": "ROOT"})  # fmt: skip
    port: int = Field(8765, ge=1, le=65535, description="port", json_schema_extra={"metavar": "PORT"})
    token: str | None = Field(
        None,
        description="required on every route (open the page with ?token=SECRET; default $CNNLAB_TOKEN); needed for "
        "a non-local --host",
        json_schema_extra={"metavar": "SECRET"},
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "warning", description="the server's log level"
    )


class ExplainSettings(Settings):
    """`cnnlab explain RUN [IMAGE…]`: which class besides the predicted one, where the files go, and
    with ``sanity`` the checks of the run's Grad-CAM on its test images."""

    sanity: bool = Field(False, description="check that the run's heat maps can be trusted")
    sanity_images: int = Field(
        64, ge=1, description="--sanity: test images checked", json_schema_extra={"flag": "--images", "metavar": "N"}
    )
    target_class: str | None = Field(
        None, description="also show Grad-CAM for this class", json_schema_extra={"flag": "--class", "metavar": "NAME"}
    )
    out: str | None = Field(
        None,
        description="where the PNGs (and --sanity's sanity.json) go (default RUN/explain)",
        json_schema_extra={"metavar": "DIR"},
    )
    max_pixels: int | None = Field(
        None, ge=1, description="pixel budget per image (default: the run's)", json_schema_extra={"metavar": "N"}
    )
    device: str = _device(config_default(TrainConfig, "device"), "auto, cpu, cuda, cuda:N, mps")
    seed: int = Field(0, ge=0, description="--sanity: seed of the re-initialised weights and the random maps",
                      json_schema_extra={"metavar": "S"})  # fmt: skip
