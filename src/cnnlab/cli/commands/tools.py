"""`cnnlab data inspect|shard`, `cache`, `list` and `gradcheck`: tools around the training runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cnnlab import api
from cnnlab.cli import argtypes
from cnnlab.cli.flags import add_config_flags, config_overrides, schema_default
from cnnlab.cli.render import format_report, progress_wanted

INSPECT_KEYS = [
    "data.split",
    "data.image_root",
    "data.delimiter",
    "data.label_sep",
    "data.data_dir",
    "data.max_pixels",
    "data.group_by",
    "data.leak_hash_bits",
    "data.leak_similarity",
]
LIST_MODELS_NOTE = (
    "(parameters for {channels}-channel input at the default size and {classes} classes; also: timm/<name>, tv/<name>)"
)
SHARD_KEYS = [
    "data.split",
    "data.val_size",
    "data.data_dir",
    "data.image_root",
    "data.input_size",
    "data.channels",
    "model.name",
]


def register(sub: Any) -> None:
    """The parsers of data (inspect, shard), cache, list and gradcheck."""
    d = sub.add_parser("data", help="look at a dataset before training on it, or shard it for streaming")
    dsub = d.add_subparsers(dest="data_command", required=True, parser_class=argtypes.Parser)
    di = dsub.add_parser(
        "inspect",
        help="counts, imbalance, formats, unreadable files, duplicates, leakage",
        description="Report per-class and per-split counts, the imbalance ratio, image size/mode/format histograms, "
        "unreadable files by reason, exact duplicates and near duplicates (re-encoded, resized, cropped or "
        "recoloured copies: a perceptual hash within --leak-hash-bits bits, confirmed by a pixel correlation of at "
        "least --leak-similarity) within and across splits (leakage), and write samples.png, augment.png and "
        "near_duplicates.png.",
    )
    di.add_argument("path", metavar="NAME|DIR|CSV")
    di.add_argument("--out", metavar="DIR", help="where the PNGs go (default inspect/<name>)")
    di.add_argument("--augment", default="keras", metavar="PRESET", help="preset shown in augment.png (default keras)")
    di.add_argument(
        "--split-seed",
        "--seed",
        dest="seed",
        type=int,
        default=schema_default("data.split_seed"),
        help="seed of the split a run would make (data.split_seed)",
    )
    di.add_argument(
        "--near-duplicates",
        choices=("auto", "on", "off"),
        default="auto",
        help="search near copies too (auto: for files, not for the built-in benchmarks)",
    )
    add_config_flags(di, only=INSPECT_KEYS)
    di.add_argument("--json", action="store_true", help="print the report as JSON")
    di.set_defaults(handler=cmd_inspect)
    ds = dsub.add_parser(
        "shard",
        help="write a dataset as WebDataset tar shards to train from by streaming",
        description="Decode SRC once (at --input-size, --channels), split it as training would, and write "
        "<split>-NNNNNN.tar shards (pixels as PNG, or raw when small; class index), labels and index.json to "
        "--out. Train from them with --data OUT (or an http(s) URL of the folder): batches stream from the "
        "shards, not memory.",
    )
    ds.add_argument("path", metavar="SRC", help="built-in dataset name, folder of class folders or CSV")
    ds.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder")
    ds.add_argument(
        "--shard-size",
        type=argtypes.positive_float,
        default=100.0,
        metavar="MB",
        help="largest shard in MB (default 100); under torchrun each rank needs a shard of its own",
    )
    ds.add_argument(
        "--split-seed",
        "--seed",
        dest="seed",
        type=int,
        default=schema_default("data.split_seed"),
        help="seed of the split (data.split_seed)",
    )
    add_config_flags(ds, only=SHARD_KEYS)
    ds.set_defaults(handler=cmd_shard)
    ca = sub.add_parser(
        "cache",
        help="list or clean the decode-once and feature caches",
        description="The caches under $CNNLAB_CACHE (default ~/.cache/cnnlab): decoded images "
        "(reused by every run on the same files and size) and backbone features "
        "(reused by runs on the same data and pretrained backbone).",
    )
    ca.add_argument("action", choices=["list", "clean"], nargs="?", default="list")
    ca.add_argument("--kind", choices=["all", "decoded", "features"], default="all")
    ca.add_argument(
        "--older-than", type=argtypes.positive_float, metavar="DAYS", help="clean: only entries older than this"
    )
    ca.add_argument("--json", action="store_true")
    ca.set_defaults(handler=cmd_cache)
    ls = sub.add_parser("list", help="list registered models, datasets, augmentation presets or engines")
    ls.add_argument("what", choices=["models", "datasets", "augmentations", "engines"])
    ls.add_argument(
        "--classes", type=int, default=10, metavar="K", help="classes for the parameter counts (default 10)"
    )
    ls.add_argument("--channels", type=int, default=3, metavar="C", help="input channels for the counts (default 3)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_list)

    g = sub.add_parser(
        "gradcheck",
        help="prove the NumPy engine's layers equal to PyTorch",
        description="Check every hand-written layer of the scratch (NumPy) engine in float64 over "
        "random shapes, kernels, strides and paddings: the relative error of its output, "
        "input gradient and parameter gradients against PyTorch autograd (tolerance "
        "1e-6) and against central finite differences (1e-5). Exit code 1 if any fails.",
    )
    g.add_argument(
        "--layer",
        action="append",
        metavar="NAME",
        help="only this layer (repeatable); default all: "
        "dense, conv2d, maxpool2d, avgpool2d, batchnorm1d/2d, relu, elu, tanh, sigmoid, softmax, flatten, "
        "dropout, cross-entropy, binary-cross-entropy",
    )
    g.add_argument(
        "--configs", type=argtypes.positive_int, default=20, metavar="N", help="random configurations per layer"
    )
    g.add_argument("--seed", type=int, default=0, metavar="S")
    g.set_defaults(handler=cmd_gradcheck)


def cmd_inspect(args: argparse.Namespace) -> int:
    overrides = {**config_overrides(args), "data.source": args.path, "data.augment": args.augment}
    cfg = api.build_config(None, overrides)
    out = args.out or str(Path("inspect") / (Path(args.path).stem or "data"))
    report = api.inspect_dataset(
        cfg.data,
        seed=args.seed,
        out=out,
        preview_augment=args.augment,
        progress=progress_wanted(args),
        near_duplicates=args.near_duplicates,
    )
    print(json.dumps(report.document(), indent=2) if args.json else format_report(report))
    return 0


def cmd_shard(args: argparse.Namespace) -> int:
    cfg = api.build_config(None, {**config_overrides(args), "data.source": args.path, "data.split_seed": args.seed})
    index = api.shard_dataset(cfg, args.out, args.shard_size, progress_wanted(args))
    for name, part in index.splits.items():
        print(f"{name:<5} {part.count:>8} images in {len(part.shards)} shard(s)")
    print(
        f"wrote {args.out}: {len(index.classes)} classes, {index.input_size} px, {index.channels} "
        f"channel(s); train from it with --data {args.out}"
    )
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    res = api.manage_cache(args.action, args.kind, args.older_than)
    if res.cleaned is not None:
        done = res.cleaned
        print(done.model_dump_json() if args.json else f"removed {done.removed} cache entries ({done.mb} MB)")
        return 0
    rows = res.entries
    if args.json:
        print(json.dumps([r.model_dump() for r in rows], indent=2))
        return 0
    print(f"{'kind':<9} {'key':<24} {'MB':>8} {'age (d)':>8}  holds")
    for r in rows:
        print(f"{r.kind:<9} {r.key[:24]:<24} {r.mb:>8} {r.age_days:>8}  {r.holds}")
    print(
        f"{len(rows)} entries, {sum(r.mb for r in rows):.1f} MB; clean with: cnnlab cache clean [--kind K] "
        "[--older-than DAYS]"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    found = api.catalog(args.what, args.classes, args.channels)
    if args.json:
        print(json.dumps(found.rows(), indent=2))
        return 0
    w = max(len(r["name"]) for r in found.rows())
    if args.what == "engines":
        print("\n".join(f"{r.name:<8}  {r.description}" for r in found.engines))
    elif args.what == "augmentations":
        for a in found.augmentations:
            print(f"{a.name:<{w}}  " + (", ".join(f"{k}={v}" for k, v in a.options.items()) or "-"))
    elif args.what == "models":
        print(f"{'name':<{w}}  {'parameters':>10}  input  pretrained                description")
        for m in found.models:
            print(f"{m.name:<{w}}  {m.parameters:>10,}  {m.input_size:>5}  {m.pretrained:<24}  {m.description}")
        print(LIST_MODELS_NOTE.format(channels=args.channels, classes=args.classes))
    else:
        print(f"{'name':<{w}}  size  classes  description")
        for d in found.datasets:
            print(f"{d.name:<{w}}  {d.size:>4}  {d.classes:>7}  {d.description}")
    return 0


def cmd_gradcheck(args: argparse.Namespace) -> int:
    rows = api.gradcheck(args.layer, args.configs, args.seed)
    cols = ("output", "input grad", "param grads", "finite differences")
    print(
        f"relative errors, float64 (tolerance {api.TOLERANCE_TORCH:g} against PyTorch, {api.TOLERANCE_FD:g} against "
        "finite differences)"
    )
    print(f"{'layer':<22}{'configs':>8}" + "".join(f"{c:>20}" for c in cols) + "  ")
    for r in rows:
        cells = "".join(f"{r.errors[c]:>20.1e}" if c in r.errors else f"{'-':>20}" for c in cols)
        print(f"{r.layer:<22}{r.configs:>8}{cells}  {'ok' if r.ok else 'FAILED'}")
    return 0 if all(r.ok for r in rows) else 1
