"""The attack corpus (issue 23): hostile inputs against every door cnnlab opens — run folders,
exported models, uploads, shards, sweep and study folders, configs — each run through the real
command, and each outcome classified:

- ``clean``: what should fail failed with one line (exit 2, no traceback), or what should work worked;
- ``traceback``: an exception escaped, or a traceback was printed;
- ``silent``: what should have been refused succeeded (a wrong result passed off as right);
- ``escape``: a canary outside the case's folder was read into an output or written to.

``python -m tests.attack`` (``make attack``) runs it all and prints the counts; a slow test does too.
Every case builds its own files in a temporary folder from a few shared, honestly made bases.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tarfile
import traceback
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tests.attack import files

CANARY = "cnnlab-canary-7f3a"  # text of the file outside every case folder that nothing may read or write


@dataclass
class Case:
    name: str
    build: Callable[[Path, dict[str, Path]], list[str]]  # (case folder, bases) → argv
    refuse: bool = True  # True: the command must fail in one line; False: it must succeed
    message: str = ""  # a fragment the one-line error must hold


@dataclass
class Outcome:
    case: str
    verdict: str
    detail: str = ""


def _copy_run(tmp: Path, bases: dict[str, Path]) -> Path:
    run = tmp / "run"
    shutil.copytree(bases["run"], run)
    return run


def _tamper(path_in_run: str, content: Any) -> Callable[[Path, dict[str, Path]], Path]:
    def make(tmp: Path, bases: dict[str, Path]) -> Path:
        run = _copy_run(tmp, bases)
        target = run / path_in_run
        if callable(content):
            content(run, target)
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        return run

    make.file = path_in_run  # type: ignore[attr-defined]
    return make


def _split(change: Callable[[dict[str, Any]], None]) -> Callable[[Path, Path], None]:
    def edit(run: Path, target: Path) -> None:
        saved = json.loads(target.read_text())
        change(saved)
        target.write_text(json.dumps(saved))

    return edit


def _link_to_canary(run: Path, target: Path) -> None:
    target.unlink()
    target.symlink_to(run.parent.parent / "canary" / "secret.pt")


def _link_to_other_run(run: Path, target: Path) -> None:
    other = run.parent / "other"
    shutil.copytree(run, other)
    target.unlink()
    target.symlink_to(other / "checkpoints" / target.name)


def _same_as_train(s: dict[str, Any]) -> None:
    s["indices"]["test"] = list(s["indices"]["train"])


RUN_TAMPERING: dict[str, Callable[[Path, dict[str, Path]], Path]] = {
    "run.json is a list": _tamper("run.json", "[]"),
    "run.json is a number": _tamper("run.json", "3"),
    "run.json is deep": _tamper("run.json", "[" * 50_000 + "]" * 50_000),
    "run.json not UTF-8": _tamper("run.json", b"\xff\xfe{"),
    "run.json is empty": _tamper("run.json", ""),
    "metrics.json is a list": _tamper("metrics.json", "[1, 2]"),
    "metrics.json NaN accuracy": _tamper("metrics.json", '{"accuracy": NaN, "split": "test"}'),
    "metrics.json deep": _tamper("metrics.json", '{"a":' * 50_000 + "1" + "}" * 50_000),
    "metrics.json strings": _tamper("metrics.json", '{"accuracy": "high", "macro_f1": [1], "split": 3}'),
    "history.csv garbage": _tamper("history.csv", b"\x00\x01garbage,,,\n\xff\xfe\n"),
    "history.csv wrong columns": _tamper("history.csv", "a,b\n1,2\nx,y\n"),
    "history.csv empty": _tamper("history.csv", ""),
    "split test = train": _tamper("split.json", _split(_same_as_train)),
    "split negative index": _tamper("split.json", _split(lambda s: s["indices"]["test"].__setitem__(0, -5))),
    "split float index": _tamper("split.json", _split(lambda s: s["indices"]["test"].__setitem__(0, 3.7))),
    "split index out of range": _tamper("split.json", _split(lambda s: s["indices"]["test"].append(10**9))),
    "split bool index": _tamper("split.json", _split(lambda s: s["indices"]["test"].__setitem__(0, True))),
    "split duplicated index": _tamper(
        "split.json", _split(lambda s: s["indices"]["test"].append(s["indices"]["test"][0]))
    ),
    "split indices a string": _tamper("split.json", _split(lambda s: s.update(indices="all"))),
    "split.json a list": _tamper("split.json", "[]"),
    "split.json missing": _tamper("split.json", lambda run, t: t.unlink()),
    "config.yaml a list": _tamper("config.yaml", "- 1\n- 2\n"),
    "config.yaml python tag": _tamper("config.yaml", "data: !!python/object/apply:os.system ['touch /tmp/pwned']\n"),
    "config.yaml billion laughs": _tamper("config.yaml", "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n"),
    "config.yaml unknown model": _tamper(
        "config.yaml", lambda run, t: t.write_text(t.read_text().replace("name: mlp", "name: evil"))
    ),
    "best.pt links outside": _tamper("checkpoints/best.pt", _link_to_canary),
    "best.pt links to another run": _tamper("checkpoints/best.pt", _link_to_other_run),
    "best.pt is a pickle bomb": _tamper("checkpoints/best.pt", lambda run, t: t.write_bytes(files.pickle_payload())),
    "best.pt truncated": _tamper("checkpoints/best.pt", lambda run, t: t.write_bytes(t.read_bytes()[:1000])),
    "best.pt is text": _tamper("checkpoints/best.pt", "not a checkpoint"),
    "predictions.npz pickled": _tamper(
        "predictions.npz",
        lambda run, t: np.savez(t, probs=np.array([object()], dtype=object), labels=np.zeros(1), indices=np.zeros(1)),
    ),
    "predictions.npz garbage": _tamper("predictions.npz", b"PK\x03\x04garbage"),
    "predictions.npz all NaN": _tamper("predictions.npz", lambda run, t: _nan_predictions(t)),
    "predictions.npz zip bomb": _tamper("predictions.npz", lambda run, t: _bomb_predictions(t)),
    "dataset.json a list": _tamper("dataset.json", "[]"),
}
# the run files each command reads and must not trust (it rewrites or never opens the others:
# resuming rewrites metrics, history, predictions and best.pt; predict reads only the checkpoint
# and run.json; compare reads no checkpoint and cannot know the data's size)
READS = {
    "evaluate": {"run.json", "config.yaml", "split.json", "checkpoints/best.pt"},
    "report": {"run.json", "config.yaml", "split.json", "checkpoints/best.pt", "metrics.json", "history.csv",
               "predictions.npz", "dataset.json"},
    "predict": {"run.json", "checkpoints/best.pt"},
    "compare": {"run.json", "config.yaml", "split.json", "metrics.json", "history.csv", "predictions.npz"},
    "export": {"run.json", "config.yaml", "split.json", "checkpoints/best.pt", "metrics.json"},
    "resume": {"run.json", "config.yaml", "split.json"},
}  # fmt: skip
ALLOWED = {("compare", "config.yaml unknown model"), ("compare", "split index out of range")}  # shown, not used
RUN_COMMANDS: dict[str, Callable[[Path, Path], list[str]]] = {
    "evaluate": lambda run, tmp: ["evaluate", str(run)],
    "report": lambda run, tmp: ["report", str(run)],
    "predict": lambda run, tmp: ["predict", str(run), str(tmp / "image.png"), "--device", "cpu"],
    "compare": lambda run, tmp: ["compare", str(run), str(tmp / "base"), "--out", str(tmp / "c.html")],
    "export": lambda run, tmp: ["export", str(run), "--out", str(tmp / "m.onnx")],
    "resume": lambda run, tmp: ["train", "--resume", str(run), "--epochs", "3", "-q"],
}


def _run_case(tampering: str, command: str) -> Case:
    def build(tmp: Path, bases: dict[str, Path]) -> list[str]:
        run = RUN_TAMPERING[tampering](tmp, bases)
        shutil.copytree(bases["run"], tmp / "base")
        (tmp / "image.png").write_bytes(files.png(8, value=80))
        return RUN_COMMANDS[command](run, tmp)

    reads = RUN_TAMPERING[tampering].file in READS[command] and (command, tampering) not in ALLOWED  # type: ignore[attr-defined]
    return Case(f"run folder: {tampering} → {command}", build, refuse=reads)


def _onnx_case(name: str, change: Callable[[dict[str, Any]], Any], refuse: bool = True) -> Case:
    def build(tmp: Path, bases: dict[str, Path]) -> list[str]:
        files.with_onnx_meta(bases["onnx"], tmp / "m.onnx", change)
        (tmp / "image.png").write_bytes(files.png(8, value=80))
        return ["predict", str(tmp / "m.onnx"), str(tmp / "image.png")]

    return Case(f"onnx metadata: {name}", build, refuse=refuse)


ONNX_CHANGES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "input_size 20000": lambda m: m["preprocess"].update(input_size=20000),
    "input_size 32": lambda m: m["preprocess"].update(input_size=32),
    "input_size 0": lambda m: m["preprocess"].update(input_size=0),
    "input_size text": lambda m: m["preprocess"].update(input_size="8"),
    "channels 7": lambda m: m["preprocess"].update(channels=7),
    "channels 3": lambda m: m["preprocess"].update(channels=3),
    "short classes": lambda m: m.update(classes=m["classes"][:3]),
    "long classes": lambda m: m.update(classes=m["classes"] * 2),
    "classes a string": lambda m: m.update(classes="0123456789"),
    "classes dicts": lambda m: m.update(classes=[{}] * len(m["classes"])),
    "std 0": lambda m: m["preprocess"].update(std=[0.0]),
    "std negative": lambda m: m["preprocess"].update(std=[-1.0]),
    "std NaN": lambda m: m["preprocess"].update(std=[float("nan")]),
    "mean two values": lambda m: m["preprocess"].update(mean=[0.1, 0.2]),
    "normalize odd": lambda m: m["preprocess"].update(normalize="exec"),
    "interpolation odd": lambda m: m["preprocess"].update(interpolation="__import__"),
    "max_pixels negative": lambda m: m["preprocess"].update(max_pixels=-1),
    "input dtype float64": lambda m: m["input"].update(dtype="float64"),
    "no preprocess": lambda m: m.pop("preprocess"),
    "version 99": lambda m: m.update(format_version=99),
    "deep JSON": lambda m: "[" * 100_000 + "]" * 100_000,
    "huge JSON": lambda m: json.dumps({**m, "pad": "x" * (2 << 20)}),
    "not JSON": lambda m: "{classes: [",
    "empty": lambda m: "",
    "a list": lambda m: "[1, 2, 3]",
}


def _upload_cases() -> Iterator[Case]:
    uploads = {
        "20000² PNG bomb": (files.png_bomb, 413),
        "20000² ICO bomb": (files.ico_bomb, 415),
        "EPS (Ghostscript)": (files.eps, 415),
        "PSD": (files.psd, 415),
        "FITS": (files.fits, 415),
        "truncated PNG": (lambda: files.png(64)[:60], 422),
        "text": (lambda: b"hello, world", 422),
        "16-bit 2000² PNG": (lambda: files.png16(2000), 200),
        "palette 2000² PNG": (lambda: files.palette_png(2000), 200),
        "tiny PNG": (lambda: files.png(8, value=10), 200),
    }
    for route in ("/predict", "/explain", "/predict/batch"):
        for name, (make, status) in uploads.items():
            if route == "/explain":
                status = 501  # the base run is an mlp: no Grad-CAM, refused before any decoding
            yield Case(f"upload {route}: {name}", _upload(route, make, status), refuse=status >= 400)
    for name, headers, status in (
        ("Host evil.example", {"Host": "evil.example"}, 403),
        ("two Authorization headers", [("Authorization", "Bearer a"), ("Authorization", "Bearer b")], 400),
        ("Content-Length too large", {"Content-Length": str(10**12)}, 413),
        ("Content-Length not a number", {"Content-Length": "lots"}, 413),
    ):
        yield Case(f"upload headers: {name}", _upload("/predict", lambda: files.png(8), status, headers), refuse=True)


def _upload(route: str, make: Callable[[], bytes], status: int, headers: Any = None) -> Callable[..., list[str]]:
    def build(tmp: Path, bases: dict[str, Path]) -> list[str]:
        return ["__upload__", route, str(status), json.dumps(headers or {}), make().hex()]

    return build


def _shard_case(name: str, damage: Callable[[Path], None], message: str = "") -> Case:
    def build(tmp: Path, bases: dict[str, Path]) -> list[str]:
        folder = tmp / "shards"
        shutil.copytree(bases["shards"], folder)
        damage(folder)
        return ["train", "--data", str(folder), "--model", "mlp", "--epochs", "1", "-q", "--no-report",
                "--out", str(tmp / "r")]  # fmt: skip

    return Case(f"shards: {name}", build, message=message)


def _first_tar(folder: Path) -> Path:
    index = json.loads((folder / "index.json").read_text())
    return folder / index["splits"]["train"]["shards"][0]["file"]


def _rewrite_tar(change: Callable[[tarfile.TarInfo, bytes | None], list[tuple[tarfile.TarInfo, bytes | None]]]):
    return lambda folder: files.rewrite_tar(_first_tar(folder), change)


_member = files.tar_member


def _only_first(ext: str, make: Callable[[tarfile.TarInfo, bytes | None], list[Any]]):
    return lambda m, d: make(m, d) if m.name == f"000000000.{ext}" else [(m, d)]


def _symlink(m: tarfile.TarInfo, d: bytes | None) -> list[Any]:
    link = tarfile.TarInfo(m.name)
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    return [(link, None)]


def _index(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        index = json.loads((folder / "index.json").read_text())
        change(index)
        (folder / "index.json").write_text(json.dumps(index))

    return damage


SHARD_DAMAGE: dict[str, Callable[[Path], None]] = {
    "symlink member": _rewrite_tar(_only_first("u8", _symlink)),
    "hard link member": _rewrite_tar(_only_first("u8", lambda m, d: [(_hardlink(m), None)])),
    "label 999": _rewrite_tar(_only_first("cls", lambda m, d: [_member(m.name, b"999")])),
    "label -1": _rewrite_tar(_only_first("cls", lambda m, d: [_member(m.name, b"-1")])),
    "label text": _rewrite_tar(_only_first("cls", lambda m, d: [_member(m.name, b"cat")])),
    "pixels too short": _rewrite_tar(_only_first("u8", lambda m, d: [_member(m.name, (d or b"")[:10])])),
    "pixels too long": _rewrite_tar(_only_first("u8", lambda m, d: [_member(m.name, (d or b"") * 2)])),
    "sample without class": _rewrite_tar(_only_first("cls", lambda m, d: [])),
    "sample without pixels": _rewrite_tar(_only_first("u8", lambda m, d: [])),
    "PNG member of another size": _rewrite_tar(
        _only_first("u8", lambda m, d: [_member("000000000.png", files.png(64))])
    ),
    "PNG member bomb": _rewrite_tar(_only_first("u8", lambda m, d: [_member("000000000.png", files.png_bomb(4000))])),
    "ICO member": _rewrite_tar(_only_first("u8", lambda m, d: [_member("000000000.png", files.ico_bomb(64))])),
    "foreign member": _rewrite_tar(_only_first("cls", lambda m, d: [(m, d), _member("evil.py", b"print(1)")])),
    "member in a folder outside": _rewrite_tar(_only_first("cls", lambda m, d: [(m, d), _member("../../x.cls", b"1")])),
    "truncated tar": lambda f: _first_tar(f).write_bytes(_first_tar(f).read_bytes()[:3000]),
    "garbage tar": lambda f: _first_tar(f).write_bytes(b"\x1f\x8b" + bytes(2000)),
    "missing shard": lambda f: _first_tar(f).unlink(),
    "count too high": _index(lambda ix: ix["splits"]["train"].update(count=10**6)),
    "shard count too high": _index(lambda ix: ix["splits"]["train"]["shards"][0].update(count=10**6)),
    "shard path outside": _index(lambda ix: ix["splits"]["train"]["shards"][0].update(file="../../canary/secret.tar")),
    "shard path absolute": _index(lambda ix: ix["splits"]["train"]["shards"][0].update(file="/etc/passwd")),
    "index channels 7": _index(lambda ix: ix.update(channels=7)),
    "index input size huge": _index(lambda ix: ix.update(input_size=10**6)),
    "index classes empty": _index(lambda ix: ix.update(classes=[])),
    "index splits a list": _index(lambda ix: ix.update(splits=[])),
    "index mean wrong length": _index(lambda ix: ix.update(mean=[0.1, 0.2, 0.3])),
    "labels short": lambda f: np.save(f / "labels-train.npy", np.load(f / "labels-train.npy")[:-3]),
    "labels out of range": lambda f: np.save(f / "labels-train.npy", np.load(f / "labels-train.npy") + 100),
    "labels pickled": lambda f: np.save(f / "labels-train.npy", np.array([object()], dtype=object), allow_pickle=True),
    "index not JSON": lambda f: (f / "index.json").write_text("{"),
}


def _hardlink(m: tarfile.TarInfo) -> tarfile.TarInfo:
    link = tarfile.TarInfo(m.name)
    link.type, link.linkname = tarfile.LNKTYPE, "000000001.u8"
    return link


def _folder_case(name: str, argv: Callable[[Path], list[str]], prepare: Callable[[Path], None] | None = None,
                 refuse: bool = True) -> Case:  # fmt: skip
    def build(tmp: Path, bases: dict[str, Path]) -> list[str]:
        if prepare is not None:
            prepare(tmp)
        return argv(tmp)

    return Case(name, build, refuse=refuse)


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _nan_predictions(target: Path) -> None:
    with np.load(target) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["probs"] = np.full_like(arrays["probs"], np.nan)
    np.savez(target, **arrays)


def _bomb_predictions(target: Path) -> None:
    """Probabilities whose header claims 30,000 × 25,000 float32 (3 GB once decompressed; the bytes
    behind the header are left short, as nothing may read past the header to refuse it)."""
    with np.load(target) as f:
        labels, indices = f["labels"], f["indices"]
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for name, arr in (("labels", labels), ("indices", indices)):
            with z.open(f"{name}.npy", "w") as out:
                np.lib.format.write_array(out, arr)
        with z.open("probs.npy", "w") as out:
            header = {"descr": "<f4", "fortran_order": False, "shape": (30_000, 25_000)}
            np.lib.format.write_array_header_1_0(out, header)
            out.write(bytes(1 << 20))


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def _seed_group(tmp: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    """A seed group's seeds.json, as cnnlab writes it, then changed (the runs need not exist to refuse it)."""
    from cnnlab.workflows.resolve import build_config

    cfg = build_config(None, {"data.source": "digits", "model.name": "mlp", "train.epochs": 1})
    state = {"format": "cnnlab-seeds", "version": 1, "status": "running", "seeds": [0, 1, 2],
             "config": cfg.model_dump(mode="json"), "given": {"data": {"source": "digits"}}}  # fmt: skip
    change(state)
    _write(tmp / "g" / "seeds.json", json.dumps(state))


def _issue_45_cases() -> Iterator[Case]:
    """Issue 45: files that are not regular files, over-long CSV fields, hostile seeds.json, a
    catastrophic --group-by."""
    yield _folder_case("train --data: a FIFO labels.csv", lambda t: ["train", "--data", str(t / "l.csv"), "--out", str(t / "r")],
                       lambda t: _fifo(t / "l.csv"))  # fmt: skip
    yield _folder_case("train --config: a FIFO", lambda t: ["train", "--config", str(t / "c.yaml"), "--out", str(t / "r")],
                       lambda t: _fifo(t / "c.yaml"))  # fmt: skip
    excl = ["train", "--data", "digits", "--model", "mlp", "--epochs", "1"]
    yield _folder_case("train --exclude: a FIFO", lambda t: [*excl, "--exclude", str(t / "x.csv"), "--out", str(t / "r")],
                       lambda t: _fifo(t / "x.csv"))  # fmt: skip
    yield _folder_case("train --exclude: a 200 KB field", lambda t: [*excl, "--exclude", str(t / "x.csv"), "--out", str(t / "r")],
                       lambda t: _write(t / "x.csv", "index\n" + "1" * 200_000 + "\n"))  # fmt: skip
    yield _folder_case("train --exclude: no path or index column", lambda t: [*excl, "--exclude", str(t / "x.csv"), "--out", str(t / "r")],
                       lambda t: _write(t / "x.csv", "foo,bar\n1,2\n"))  # fmt: skip
    yield _folder_case("train --data: a label CSV with a 200 KB field", lambda t: ["train", "--data", str(t / "l.csv"), "--out", str(t / "r")],
                       lambda t: _write(t / "l.csv", "path,label\n" + "a" * 200_000 + ",x\n"))  # fmt: skip
    yield _folder_case("train --data: a label CSV not UTF-8", lambda t: ["train", "--data", str(t / "l.csv"), "--out", str(t / "r")],
                       lambda t: _write(t / "l.csv", b"path,label\n\xff\xfe,x\n"))  # fmt: skip
    for name, change in {
        "100,000 seeds": lambda s: s.update(seeds=list(range(100_000))),
        "a negative seed": lambda s: s.update(seeds=[-1, 0]),
        "a seed twice": lambda s: s.update(seeds=[1, 1]),
        "seeds a string": lambda s: s.update(seeds="0,1"),
        "a true seed": lambda s: s.update(seeds=[True, 2]),
        "an invalid config": lambda s: s["config"]["train"].update(epochs=-3),
        "a newer version": lambda s: s.update(version=99),
    }.items():  # fmt: skip
        yield _folder_case(f"train --resume seed group: {name}", lambda t: ["train", "--resume", str(t / "g")],
                           lambda t, change=change: _seed_group(t, change))  # fmt: skip
    yield _folder_case(
        "study --group-by '(a+)+$' on long names",
        lambda t: ["study", str(t / "d"), "--group-by", "(a+)+$", "--budget", "10s", "--out", str(t / "s")],
        lambda t: [_write(t / "d" / c / ("a" * 60 + f"{i}!.png"), b"not a png") for c in "xy" for i in range(3)],
    )


def _board(prepare: Callable[[Path, dict[str, Path]], Any], route: str, status: int) -> Callable[..., list[str]]:
    """A board root holding a copy of the base run (runs/r) and what ``prepare`` plants, then one GET."""

    def build(tmp: Path, bases: dict[str, Path]) -> list[str]:
        root = tmp / "root"
        shutil.copytree(bases["run"], root / "runs" / "r")
        prepare(root, bases)
        return ["__board__", str(root), route, str(status)]

    return build


def _linked(root: Path, bases: dict[str, Path]) -> None:
    shutil.copytree(root / "runs" / "r", root / "runs" / "linked")
    (root / "runs" / "linked" / "config.yaml").unlink()
    (root / "runs" / "linked" / "config.yaml").symlink_to(bases["canary"] / "secret.pt")


def _nothing(root: Path, bases: dict[str, Path]) -> None:
    return None


def _deep_study(root: Path, bases: dict[str, Path]) -> None:
    _write(root / "s" / "study.json", "[" * 100_000 + "]" * 100_000)


def _huge_cv(root: Path, bases: dict[str, Path]) -> None:
    _write(root / "c" / "cv.json", b'{"format": "cnnlab-cv", "pad": "' + b"x" * (65 << 20) + b'"}')


def _long_history(root: Path, bases: dict[str, Path]) -> None:
    rows = "".join(f"{i},0.5,0.5,0.5,0.5\n" for i in range(1, 1_000_001))
    _write(root / "runs" / "r" / "history.csv", "epoch,train_loss,train_acc,val_loss,val_acc\n" + rows)


def _board_cases() -> Iterator[Case]:
    """Issue 45: the board's routes against links out of its root, NUL and over-long paths, state
    files nested deep or over their cap, a history of millions of rows, tokens no header can carry."""
    for name, prepare, route, status in (
        ("a run whose config.yaml links outside: /api/run", _linked, "/api/run?path=runs/linked", 403),
        ("a run whose config.yaml links outside: /api/compare", _linked, "/api/compare?path=runs/linked&path=runs/r", 403),
        ("a file linked outside: /file/", _linked, "/file/runs/linked/config.yaml", 403),
        ("NUL in a file path", _nothing, "/file/runs/r/config.yaml%00.png", 400),
        ("a 5,000-character path", _nothing, "/api/run?path=" + "b" * 5000, 400),
        ("study.json nested 100,000 deep", _deep_study, "/api/group?path=s", 422),
        ("cv.json over 64 MB", _huge_cv, "/api/group?path=c", 422),
        ("a history.csv of a million epochs (its tail is read)", _long_history, "/api/run?path=runs/r", 200),
    ):  # fmt: skip
        yield Case(f"board: {name}", _board(prepare, route, status), refuse=status >= 400)
    for token in ("x\ny", "semi;colon", "é-non-ascii"):
        yield _folder_case(f"board --token {token!r}", lambda t, token=token: ["board", str(t), "--token", token])


def _input_cases() -> Iterator[Case]:
    """Bad commands and files given to study, cv, sweep and train: one line each."""
    yield _folder_case("study: missing data", lambda t: ["study", "/nonexistent", "--out", str(t / "s")])
    yield _folder_case("study: empty budget", lambda t: ["study", "digits", "--budget", "", "--out", str(t / "s")])
    yield _folder_case("study: budget 1s", lambda t: ["study", "digits", "--budget", "1s", "--out", str(t / "s")])
    yield _folder_case("study: --folds 1", lambda t: ["study", "digits", "--folds", "1", "--out", str(t / "s")])
    yield _folder_case("study: resume a non-study", lambda t: ["study", "--resume", "--out", str(t)])
    yield _folder_case("study: study.json a list", lambda t: ["study", "--resume", "--out", str(t / "s")],
                       lambda t: _write(t / "s" / "study.json", "[]"))  # fmt: skip
    yield _folder_case("study: study.json newer", lambda t: ["study", "--resume", "--out", str(t / "s")],
                       lambda t: _write(t / "s" / "study.json", '{"format": "cnnlab-study", "version": 99}'))  # fmt: skip
    yield _folder_case("cv: --folds 1", lambda t: ["cv", "--data", "digits", "--folds", "1", "--out", str(t / "c")])
    yield _folder_case(
        "cv: more folds than images", lambda t: ["cv", "--data", "digits", "--folds", "5000", "--out", str(t / "c")]
    )
    yield _folder_case("cv: cv.json damaged", lambda t: ["cv", "--data", "digits", "--resume", "--out", str(t / "c")],
                       lambda t: _write(t / "c" / "cv.json", "{"))  # fmt: skip
    yield _folder_case("cv: cv.json version text", lambda t: ["cv", "--data", "digits", "--resume", "--out", str(t / "c")],
                       lambda t: _write(t / "c" / "cv.json", '{"format": "cnnlab-cv", "version": "x"}'))  # fmt: skip
    for name, text in {
        "a list": "- 1\n", "no spec": "study: x\n", "python tag": "!!python/object/apply:os.system [ls]\n",
        "aliases": "a: &a [1]\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n", "not UTF-8": b"\xff\xfe",
    }.items():  # fmt: skip
        yield _folder_case(f"sweep: sweep.yaml {name}", lambda t: ["sweep", "--resume", "--out", str(t / "sw")],
                           lambda t, text=text: _write(t / "sw" / "sweep.yaml", text))  # fmt: skip
    for name, text in {
        "grid of 10^9 seeds": "base: {data: {source: digits}}\nmethod: grid\nspace: {train.seed: {type: int, low: 0, high: 1000000000, step: 1}}\n",
        "step 1e-15": "base: {data: {source: digits}}\nmethod: grid\nspace: {optim.lr: {type: float, low: 0.0, high: 1.0, step: 1.0e-15}}\n",
        "unknown key": "base: {data: {source: digits}}\nmethod: tpe\ntrials: 2\nspace: {optim.nope: [1, 2]}\n",
        "a list": "- 1\n",
        "billion laughs": "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n",
    }.items():  # fmt: skip
        yield _folder_case(f"sweep spec: {name}", lambda t: ["sweep", str(t / "spec.yaml"), "--out", str(t / "sw")],
                           lambda t, text=text: _write(t / "spec.yaml", text))  # fmt: skip
    for name, text in {
        "python tag": "data: !!python/object/apply:os.system ['touch pwned']\n",
        "a list": "- data\n",
        "unknown section": "evil: {x: 1}\n",
        "huge": "data: {source: '" + "x" * (2 << 20) + "'}\n",
        "NUL bytes": "data:\x00 {}\n",
    }.items():  # fmt: skip
        yield _folder_case(f"train --config: {name}", lambda t: ["train", "--config", str(t / "c.yaml"), "--out", str(t / "r")],
                           lambda t, text=text: _write(t / "c.yaml", text))  # fmt: skip


def cases() -> list[Case]:
    """The whole corpus: every run-folder tampering against every command, then the rest."""
    return [_run_case(t, c) for t in RUN_TAMPERING for c in RUN_COMMANDS] + _other_cases()


def sample() -> list[Case]:
    """Each run-folder tampering against one command, the six commands in turn (33 of the 198),
    then the rest: every kind of damage and every command in under half the time (43 s against
    94 s in the default suite; `make attack` and the `long` test run the whole corpus)."""
    commands = list(RUN_COMMANDS)
    return [_run_case(t, commands[i % len(commands)]) for i, t in enumerate(RUN_TAMPERING)] + _other_cases()


def _other_cases() -> list[Case]:
    out = [_onnx_case(n, ch) for n, ch in ONNX_CHANGES.items()]
    out += [
        _onnx_case(
            "max_pixels 10^12 (capped, not lifted)", lambda m: m["preprocess"].update(max_pixels=10**12), refuse=False
        )
    ]
    out += list(_upload_cases())
    out += [_shard_case(n, d) for n, d in SHARD_DAMAGE.items()]
    out += list(_input_cases())
    out += list(_issue_45_cases())
    out += list(_board_cases())
    return out


# ---------------------------------------------------------------------------------------------- running
def make_bases(root: Path) -> dict[str, Path]:
    """A finished digits run, its ONNX export, its shards: honestly made, then copied per case."""
    from cnnlab import api
    from cnnlab.cli import main
    from cnnlab.workflows.resolve import build_config

    run = root / "run"
    cfg = {"data.source": "digits", "model.name": "mlp", "model.hidden": [16], "train.epochs": 2}
    api.train(build_config(None, {**cfg, "run.out": str(run), "run.report": False}), progress=False)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["export", str(run), "--out", str(root / "m.onnx")]) == 0
        assert main(["data", "shard", "digits", "--out", str(root / "shards"), "--shard-size", "0.03"]) == 0
    canary = root / "canary"
    canary.mkdir()
    (canary / "secret.pt").write_text(CANARY)
    (canary / "secret.tar").write_text(CANARY)
    return {"run": run, "onnx": root / "m.onnx", "shards": root / "shards", "canary": canary}


def _served_client(bases: dict[str, Path]) -> Any:
    from fastapi.testclient import TestClient

    from cnnlab.workflows.deploy.serve import create_app, load_served

    return TestClient(create_app(load_served(str(bases["run"]))), base_url="http://localhost")


def run_case(case: Case, tmp: Path, bases: dict[str, Path], client: Any = None) -> Outcome:
    from cnnlab.cli import main

    tmp.mkdir(parents=True, exist_ok=True)
    before = sorted(p.name for p in bases["canary"].iterdir())
    try:
        argv = case.build(tmp, bases)
    except Exception as e:  # the case itself could not be built: the corpus's fault, counted apart
        return Outcome(case.name, "unbuildable", f"{type(e).__name__}: {e}")
    if argv[0] == "__upload__":
        return _upload_outcome(case, argv, client)
    if argv[0] == "__board__":
        return _board_outcome(case, argv)
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(argv)
    except SystemExit as e:  # argparse's own refusal
        code = int(e.code or 0)
    except BaseException as e:  # noqa: BLE001 (what the corpus looks for)
        return Outcome(case.name, "traceback", "".join(traceback.format_exception_only(type(e), e)).strip()[:300])
    text = err.getvalue() + out.getvalue()
    if sorted(p.name for p in bases["canary"].iterdir()) != before:
        return Outcome(case.name, "escape", "a file appeared beside the canary")
    if CANARY in text or any(
        CANARY in p.read_text(errors="ignore")
        for p in tmp.rglob("*")
        if p.is_file() and p.suffix in (".csv", ".json", ".jsonl", ".html") and p.stat().st_size < 5 * 2**20
    ):
        return Outcome(case.name, "escape", "the canary's text reached an output")
    if "Traceback" in text:
        return Outcome(case.name, "traceback", text[-300:])
    if case.refuse:
        if code == 0:
            return Outcome(case.name, "silent", "succeeded where it should have been refused")
        lines = err.getvalue().strip().splitlines()
        if code not in (1, 2) or len(lines) > 20 or (case.message and case.message not in err.getvalue()):
            return Outcome(case.name, "unclear", f"exit {code}: {err.getvalue()[-300:]}")
        return Outcome(case.name, "clean", lines[-1][:200] if lines else "")
    return Outcome(case.name, "clean" if code == 0 else "refused", f"exit {code}: {err.getvalue()[-200:]}")


def _upload_outcome(case: Case, argv: list[str], client: Any) -> Outcome:
    _, route, status, headers, body = argv
    want = int(status)
    h = json.loads(headers)
    pairs = [tuple(x) for x in h] if isinstance(h, list) else list(h.items())
    pairs = [(k, v) for k, v in pairs] + (
        [] if any(k.lower() == "content-type" for k, _ in pairs) else [("Content-Type", "image/png")]
    )
    data = bytes.fromhex(body)
    try:
        if route == "/predict/batch":
            files_ = [("files", ("x.png", data, "image/png"))]
            r = client.post(route, files=files_, headers=[p for p in pairs if p[0].lower() != "content-type"])
            got = r.status_code
            if got == 200 and want >= 400:  # per-image errors in a batch: the image's own entry says so
                result = r.json()["results"][0]
                got = want if "error" in result else 200
        else:
            r = client.post(route, content=data, headers=pairs)
            got = r.status_code
    except Exception as e:  # noqa: BLE001
        return Outcome(case.name, "traceback", f"{type(e).__name__}: {e}"[:300])
    if got != want:
        verdict = "silent" if got == 200 else "unclear"
        return Outcome(case.name, verdict, f"HTTP {got}, wanted {want}: {r.text[:200]}")
    return Outcome(case.name, "clean", f"HTTP {got}")


def _board_outcome(case: Case, argv: list[str]) -> Outcome:
    from fastapi.testclient import TestClient

    from cnnlab.workflows.board.app import create_board

    _, root, route, status = argv
    try:
        with TestClient(create_board(root), base_url="http://localhost") as client:
            r = client.get(route)
    except Exception as e:  # noqa: BLE001
        return Outcome(case.name, "traceback", f"{type(e).__name__}: {e}"[:300])
    if CANARY in r.text:
        return Outcome(case.name, "escape", f"HTTP {r.status_code} served the canary")
    if r.status_code != int(status) or "Traceback" in r.text:
        verdict = "silent" if r.status_code == 200 else "unclear"
        return Outcome(case.name, verdict, f"HTTP {r.status_code}, wanted {status}: {r.text[:200]}")
    return Outcome(case.name, "clean", f"HTTP {r.status_code}")


def run_all(
    root: Path, only: str | None = None, progress: bool = True, chosen: list[Case] | None = None
) -> list[Outcome]:
    bases = make_bases(root / "bases")
    client = _served_client(bases)
    chosen = [c for c in (cases() if chosen is None else chosen) if only is None or only in c.name]
    outcomes = []
    with client:
        for i, case in enumerate(chosen):
            outcome = run_case(case, root / f"case-{i:04d}", bases, client)
            outcomes.append(outcome)
            shutil.rmtree(root / f"case-{i:04d}", ignore_errors=True)
            if progress:
                print(f"[{i + 1}/{len(chosen)}] {outcome.verdict:<11} {case.name}", flush=True)
    return outcomes


def summary(outcomes: list[Outcome]) -> str:
    counts = Counter(o.verdict for o in outcomes)
    lines = [
        f"{len(outcomes)} cases: "
        + ", ".join(
            f"{counts[k]} {k}"
            for k in ("clean", "traceback", "silent", "escape", "unclear", "refused", "unbuildable")
            if counts[k]
        )
    ]
    for o in outcomes:
        if o.verdict != "clean":
            lines.append(f"  {o.verdict}: {o.case}: {o.detail}")
    return "\n".join(lines)
