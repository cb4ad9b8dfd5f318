"""`cnnlab predict` over files, folders (recursively) and globs, batched, streamed to CSV or JSON
lines. With an exported .onnx model nothing here imports PyTorch."""

from __future__ import annotations

import csv
import glob
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel

from cnnlab.core.errors import CnnlabError
from cnnlab.core.run_settings import PredictSettings
from cnnlab.data.images import IMAGE_EXTENSIONS
from cnnlab.inference.load import load_model

OUT_FORMATS = (".csv", ".jsonl")
CSV_FIELDS = ["path", "label", "prob", "top_k", "labels", "error"]


def expand_inputs(items: Sequence[str]) -> list[str]:
    """Files as given; folders → their image files, recursively, sorted (hidden entries skipped);
    globs (``*``, ``?``, ``[``, ``**``) → the files they match. What matches nothing stays, so that
    it is reported as not found."""
    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [
                    os.path.join(root, f)
                    for f in files
                    if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
                ]
            out += sorted(found)
        elif not p.exists() and any(c in item for c in "*?["):
            matches = sorted(m for m in glob.glob(item, recursive=True) if not Path(m).is_dir())
            out += matches or [item]
        else:
            out.append(item)
    return out


def _chunks(items: Sequence[str], n: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _csv_row(r: dict[str, Any]) -> dict[str, Any]:
    if "error" in r:
        return {"path": r["path"], "error": r["error"]}
    top = r["top"]
    return {
        "path": r["path"],
        "label": top[0]["class"],
        "prob": f"{top[0]['prob']:.6g}",
        "top_k": ";".join(f"{t['class']}={t['prob']:.6g}" for t in top),
        "labels": ";".join(r["labels"]) if "labels" in r else "",
        "error": "",
    }


class Predicted(BaseModel):
    """What `predict_files` did: images found and predicted, each unreadable one with its reason, the
    output file, and (with ``collect``) every result."""

    images: int
    predicted: int
    errors: list[tuple[str, str]]
    out: str | None
    results: list[dict[str, Any]] = []


def predict_files(
    model: Any, items: Sequence[str], settings: PredictSettings | None = None, progress: bool = True
) -> Predicted:
    """Predict every image of ``items`` with ``model`` (a run folder or an exported model file,
    loaded on ``settings.device`` with ``max_pixels``, a TorchScript file only with ``trust_torchscript``
    or when exported here; or a loaded model) in batches; results go to ``settings.out`` (.csv or .jsonl,
    written whole or not at all), as lines to stdout, or, with ``collect``, are kept.

    """
    st = settings or PredictSettings()
    out, top_k, batch_size, collect = st.out, st.top_k, st.batch_size, st.collect
    from tqdm.auto import tqdm

    if isinstance(model, (str, Path)):
        model = load_model(str(model), st.device, st.max_pixels, trust_torchscript=st.trust_torchscript, tta=st.tta)
    files = expand_inputs(items)
    if not files:
        raise CnnlabError("no image files found in " + ", ".join(items))
    target = Path(out) if out else None
    if target is not None and target.suffix.lower() not in OUT_FORMATS:
        raise CnnlabError(f"--out {target}: give a .csv or .jsonl file name")
    if target is not None and target.is_dir():
        raise CnnlabError(f"--out {target}: is a folder; give a .csv or .jsonl file name")
    errors: list[tuple[str, str]] = []
    kept: list[dict[str, Any]] = []
    tmp = None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        tmp = Path(name)
        sink: TextIO = os.fdopen(fd, "w", newline="", encoding="utf-8")
    else:
        sink = sys.stdout
    try:
        writer = csv.DictWriter(sink, CSV_FIELDS) if target is not None and target.suffix.lower() == ".csv" else None
        if writer is not None:
            writer.writeheader()
        bar = tqdm(total=len(files), desc="predicting", unit="img", disable=not progress, leave=False)
        for chunk in _chunks(files, batch_size):
            for r in model.predict(list(chunk), top_k=top_k, batch_size=batch_size):
                if "error" in r:
                    errors.append((r["path"], r["error"]))
                if collect and target is None:
                    kept.append(r)
                elif writer is not None:
                    writer.writerow(_csv_row(r))
                elif target is not None:
                    sink.write(json.dumps(r) + "\n")
                else:
                    sink.write(_line(r) + "\n")
            bar.update(len(chunk))
        bar.close()
        if target is not None and tmp is not None:
            sink.close()
            os.replace(tmp, target)
    finally:
        if tmp is not None:
            if not sink.closed:
                sink.close()
            tmp.unlink(missing_ok=True)
    return Predicted(images=len(files), predicted=len(files) - len(errors), errors=errors,
                     out=str(target) if target else None, results=kept)  # fmt: skip


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['path']}: error: {r['error']}"
    labels = f"  labels: {', '.join(r['labels']) or '(none)'}" if "labels" in r else ""
    return f"{r['path']}: " + ", ".join(f"{t['class']} {t['prob']:.3f}" for t in r["top"]) + labels
