"""`cnnlab predict`, `export` and `serve`: a trained model put to work."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TypeVar

from cnnlab import api
from cnnlab.cli import argtypes
from cnnlab.cli.flags import add_settings_flags, settings_of
from cnnlab.cli.render import progress_wanted
from cnnlab.core.run_settings import BindSettings, BoardSettings, ExportSettings, PredictSettings, ServeSettings


def register(sub: Any) -> None:
    """The parsers of predict, export, serve and board."""
    pr = sub.add_parser(
        "predict",
        help="top-k classes for image files, folders and globs",
        description="Classify images with a run's best checkpoint, or with a model file from "
        "`cnnlab export` (an .onnx file needs only ONNX Runtime, not PyTorch). PATHs "
        "are files, folders (searched recursively) and globs; unreadable files are "
        "listed with their reason and do not stop the rest (exit 1 if any).",
    )
    pr.add_argument("run", metavar="RUN_OR_MODEL", help="a run folder, or an exported .onnx / .ts file")
    pr.add_argument("images", nargs="+", metavar="PATH")
    positive = dict.fromkeys(("top_k", "batch_size", "max_pixels"), argtypes.positive_int)
    add_settings_flags(pr, PredictSettings, {"device": argtypes.device, **positive})
    pr.set_defaults(handler=cmd_predict)

    ex = sub.add_parser(
        "export",
        help="export a run to ONNX or TorchScript, with a parity check",
        description="Export a run's best checkpoint with a dynamic batch axis and its classes, "
        "preprocessing and thresholds in the file's metadata, then run it against "
        "the PyTorch model on the run's test images at batch 1, 2 and 64; the "
        "command fails, writing nothing, when they disagree.",
    )
    ex.add_argument("run", metavar="RUN")
    add_settings_flags(
        ex,
        ExportSettings,
        {
            "tolerance": argtypes.positive_float,
            "min_agreement": argtypes.positive_float,
            "check_images": argtypes.positive_int,
        },  # fmt: skip
    )
    ex.add_argument("--json", action="store_true", help="print the result as JSON")
    ex.set_defaults(handler=cmd_export)

    sv = sub.add_parser(
        "serve",
        help="an HTTP service (and a page at /) for a run or an exported model",
        description="Serve a run folder or an exported .onnx/.ts model: POST /predict, "
        "/predict/batch, /explain (Grad-CAM, run folders only), GET /health, /info, "
        "/docs, and a page at / to try it. Binds 127.0.0.1 unless told otherwise; "
        "another address needs --token or an explicit --no-auth.",
    )
    sv.add_argument("run", metavar="RUN_OR_MODEL", help="a run folder, or an exported .onnx / .ts file")
    add_settings_flags(sv, ServeSettings, BIND_TYPES | {"max_pixels": argtypes.positive_int,
                                                         "max_upload_mb": argtypes.positive_float,
                                                         "decode_memory_mb": argtypes.positive_float,
                                                         "body_timeout": argtypes.positive_float})  # fmt: skip
    sv.set_defaults(handler=cmd_serve)

    bd = sub.add_parser(
        "board",
        help="every run, sweep, CV and study under a folder in one live local page",
        description="A read-only web page over ROOT (default: the current folder): an index of every run "
        "folder, CV, sweep and study with status, model, the config values that differ, best validation "
        "and test figures, time and age (sort, filter); a run's live curves and config; ticked runs "
        "overlaid with their config differences and paired test; a sweep's trials, min/mean/max band, "
        "parallel coordinates (drag an axis to filter), importance and correlation. Updates itself as "
        "files change; charts come from plotly's bundled script, served locally.",
    )
    add_settings_flags(bd, BoardSettings, BIND_TYPES)
    bd.set_defaults(handler=cmd_board)


def cmd_predict(args: argparse.Namespace) -> int:
    settings = settings_of(args, PredictSettings)
    summary = api.predict_files(args.run, args.images, settings, progress_wanted(args))
    if settings.collect:
        print(json.dumps(summary.results, indent=2))
    if settings.out:
        print(f"{summary.predicted} of {summary.images} images predicted → {summary.out}")
    if summary.errors and (settings.out or settings.collect):
        print(f"{len(summary.errors)} unreadable:", file=sys.stderr)
        for path, reason in summary.errors[:20]:
            print(f"  {path}: {reason}", file=sys.stderr)
        if len(summary.errors) > 20:
            print(f"  … and {len(summary.errors) - 20} more (see the output file)", file=sys.stderr)
    return 1 if summary.errors else 0


def cmd_export(args: argparse.Namespace) -> int:
    r = api.export_run(args.run, settings_of(args, ExportSettings), progress_wanted(args))
    if args.json:
        print(json.dumps(r.model_dump(mode="json"), indent=2))
        return 0
    meta = r.metadata
    print(
        f"wrote {r.file} ({r.format}, {r.bytes / 2**20:.1f} MB): {meta['model']}, "
        f"{len(meta['classes'])} classes, input {meta['input']['dtype']} "
        f"(N, {meta['input']['channels']}, {meta['input']['size']}, {meta['input']['size']}), batch dynamic; "
        f"{meta['weights']}"
    )
    p = r.parity
    if p is None:
        print("parity check skipped (--no-check)")
        return 0
    print(f"parity against PyTorch on {p['images']} {p['split']} images:")
    for row in p["rows"]:
        print(
            f"  batch {row['batch']:>3} ({row['images']:>6} images): max |Δprob| {row['max_abs_dprob']:.2e}, "
            f"top-1 agreement {row['top1_agreement']:.4%}"
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    api.serve(args.run, _with_token(settings_of(args, ServeSettings)))
    return 0


BIND_TYPES = {"port": argtypes.port, "device": argtypes.device}
BoundT = TypeVar("BoundT", bound=BindSettings)


def _with_token(settings: BoundT) -> BoundT:
    """``--token``, or else $CNNLAB_TOKEN."""
    if settings.token is None and os.environ.get("CNNLAB_TOKEN"):
        return settings.model_copy(update={"token": os.environ["CNNLAB_TOKEN"]})
    return settings


def cmd_board(args: argparse.Namespace) -> int:
    api.board(_with_token(settings_of(args, BoardSettings)))
    return 0
