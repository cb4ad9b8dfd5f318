"""`cnnlab predict`, `export` and `serve`: a trained model put to work."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from cnnlab import api
from cnnlab.cli import argtypes
from cnnlab.cli.flags import schema_default
from cnnlab.cli.render import progress_wanted


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
    pr.add_argument("--out", metavar="FILE", help="write all predictions to a .csv or .jsonl file")
    pr.add_argument("--top-k", type=argtypes.positive_int, default=3, metavar="K")
    pr.add_argument(
        "--batch-size", type=argtypes.positive_int, default=64, metavar="N", help="images per batch (default 64)"
    )
    pr.add_argument(
        "--max-pixels",
        type=argtypes.positive_int,
        metavar="N",
        help="pixel budget per image (default: the run's); larger JPEGs are decoded downscaled",
    )
    pr.add_argument(
        "--device",
        default=schema_default("train.device"),
        type=argtypes.device,
        metavar="DEV",
        help="for a run folder (default auto)",
    )
    pr.add_argument(
        "--trust-torchscript",
        action="store_true",
        help="load a TorchScript file not exported by cnnlab on this machine (it runs code when loaded)",
    )
    argtypes.add_tta_flag(pr)
    pr.add_argument("--json", action="store_true", help="print results as one JSON list")
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
    ex.add_argument("--format", default="onnx", choices=["onnx", "torchscript"], help="default onnx (opset 18)")
    ex.add_argument("--out", metavar="FILE", help="default RUN/export/model.onnx (or model.ts)")
    ex.add_argument(
        "--with-preprocessing",
        action="store_true",
        help="normalisation inside the graph: the model takes uint8 pixels (N, C, H, W)",
    )
    ex.add_argument(
        "--tolerance",
        type=argtypes.positive_float,
        default=1e-4,
        metavar="X",
        help="largest |Δprob| allowed against PyTorch (default 1e-4)",
    )
    ex.add_argument(
        "--min-agreement",
        type=argtypes.positive_float,
        default=0.999,
        metavar="X",
        help="smallest share of identical top-1 classes (default 0.999)",
    )
    ex.add_argument(
        "--check-images",
        type=argtypes.positive_int,
        metavar="N",
        help="check on the first N test images only (default all)",
    )
    ex.add_argument("--no-check", action="store_true", help="skip the parity check (not recommended)")
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
    _add_bind_flags(sv, 8000, "require 'Authorization: Bearer SECRET' on every request (env CNNLAB_TOKEN also works)")
    sv.add_argument(
        "--max-upload-mb",
        type=argtypes.positive_float,
        default=10.0,
        metavar="MB",
        help="largest request body (default 10 MB)",
    )
    sv.add_argument(
        "--max-pixels",
        type=argtypes.positive_int,
        default=16_000_000,
        metavar="N",
        help="pixel budget per image (default 16,000,000); larger JPEGs are decoded downscaled",
    )
    sv.add_argument(
        "--device", default="cpu", type=argtypes.device, metavar="DEV", help="for a run folder (default cpu)"
    )
    sv.add_argument(
        "--decode-memory-mb",
        type=argtypes.positive_float,
        default=512.0,
        metavar="MB",
        help="memory all image decodes in flight may hold together; a larger image waits its turn, one "
        "that alone needs more gets 413 (default 512 MB)",
    )
    sv.add_argument(
        "--body-timeout",
        type=argtypes.positive_float,
        default=30.0,
        metavar="S",
        help="seconds a client may send nothing of its upload before it gets 408 (default 30)",
    )
    sv.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name clients may use besides localhost/127.0.0.1/::1 (repeatable); requests naming "
        "another host get 403, which keeps web pages elsewhere from reaching a local service",
    )
    sv.add_argument(
        "--trust-torchscript",
        action="store_true",
        help="load a TorchScript file not exported by cnnlab on this machine (it runs code when loaded)",
    )
    argtypes.add_tta_flag(sv)
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
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
    bd.add_argument("root", nargs="?", default=".", metavar="ROOT")
    _add_bind_flags(
        bd,
        8765,
        "required on every route (open the page with ?token=SECRET; default $CNNLAB_TOKEN); needed for a "
        "non-local --host",
    )
    bd.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    bd.set_defaults(handler=cmd_board)


def cmd_predict(args: argparse.Namespace) -> int:
    summary = api.predict_files(
        args.run,
        args.images,
        args.out,
        args.top_k,
        args.batch_size,
        progress=progress_wanted(args),
        collect=args.json,
        device=args.device,
        max_pixels=args.max_pixels,
        trust_torchscript=args.trust_torchscript,
        tta=args.tta,
    )
    if args.json:
        print(json.dumps(summary["results"], indent=2))
    if args.out:
        print(f"{summary['predicted']} of {summary['images']} images predicted → {summary['out']}")
    if summary["errors"] and (args.out or args.json):
        print(f"{len(summary['errors'])} unreadable:", file=sys.stderr)
        for path, reason in summary["errors"][:20]:
            print(f"  {path}: {reason}", file=sys.stderr)
        if len(summary["errors"]) > 20:
            print(f"  … and {len(summary['errors']) - 20} more (see the output file)", file=sys.stderr)
    return 1 if summary["errors"] else 0


def cmd_export(args: argparse.Namespace) -> int:
    r = api.export_run(
        args.run,
        args.format,
        args.out,
        args.with_preprocessing,
        check=not args.no_check,
        tolerance=args.tolerance,
        min_agreement=args.min_agreement,
        check_images=args.check_images,
        progress=progress_wanted(args),
    )
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    meta = r["metadata"]
    print(
        f"wrote {r['file']} ({r['format']}, {r['bytes'] / 2**20:.1f} MB): {meta['model']}, "
        f"{len(meta['classes'])} classes, input {meta['input']['dtype']} "
        f"(N, {meta['input']['channels']}, {meta['input']['size']}, {meta['input']['size']}), batch dynamic; "
        f"{meta['weights']}"
    )
    p = r["parity"]
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
    api.serve(
        args.run,
        host=args.host,
        port=args.port,
        token=_token(args),
        no_auth=args.no_auth,
        device=args.device,
        max_upload=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
        log_level=args.log_level,
        decode_memory=int(args.decode_memory_mb * 2**20),
        allowed_host=tuple(args.allowed_host),
        body_timeout=args.body_timeout,
        trust_torchscript=args.trust_torchscript,
        tta=args.tta,
    )
    return 0


def _add_bind_flags(parser: argparse.ArgumentParser, port: int, token_help: str) -> None:
    """Where a local service listens and who may reach it (cnnlab serve, cnnlab board)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=argtypes.port, default=port, help=f"port (default {port})")
    parser.add_argument("--token", metavar="SECRET", help=token_help)
    parser.add_argument("--no-auth", action="store_true", help="serve a non-local address without a token")


def _token(args: argparse.Namespace) -> str | None:
    return args.token if args.token is not None else os.environ.get("CNNLAB_TOKEN")


def cmd_board(args: argparse.Namespace) -> int:
    api.board(
        args.root, host=args.host, port=args.port, token=_token(args), no_auth=args.no_auth, log_level=args.log_level
    )
    return 0
