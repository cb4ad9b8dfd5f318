"""File-based sources: class-per-folder trees and CSV/TSV label files → lists of files and labels."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.core.errors import CnnlabError
from cnnlab.core.textfiles import not_regular, read_text_file
from cnnlab.data.images import IMAGE_EXTENSIONS

SPLIT_NAMES = ("train", "val", "test")
PATH_COLUMNS = ("path", "file", "filename", "file_name", "filepath", "image", "image_path", "img", "image_id", "id")
LABEL_COLUMNS = ("label", "labels", "class", "classes", "category", "target", "tags", "tag")
GROUP_COLUMNS = ("group", "group_id", "subject", "patient", "scene")

log = logging.getLogger(__name__)


@dataclass
class FileList:
    """Image files with labels, before decoding.

    Attributes:
        root: paths are stored relative to it.
        files: absolute paths.
        labels: (N,) int64 class indices, or (N, K) uint8 multi-hot for multi-label data.
        classes: class names in index order.
        split_of: the split each file was given by the source (pre-split folders), or None.
        skipped: entries that are not usable files (missing, broken link, not a regular file).
        ignored: files without an image extension that were left out.
        groups: a CSV's group column per file (same scene, painting, patient), or None.
    """

    root: Path
    files: list[Path]
    labels: np.ndarray
    classes: list[str]
    split_of: list[str | None]
    skipped: list[dict[str, str]] = field(default_factory=list)
    ignored: int = 0
    groups: list[str] | None = None

    def relpath(self, p: Path) -> str:
        try:
            return str(p.relative_to(self.root))
        except ValueError:
            return str(p)


def shown_path(path: str) -> str:
    """A file path fit to print or write as UTF-8: bytes that are not UTF-8 (kept by Python as
    surrogates) shown as \\xNN escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def usable(path: Path) -> str | None:
    """None for a regular file, else why it cannot be used."""
    try:
        if path.is_symlink() and not path.exists():
            return "broken symbolic link"
        if not path.exists():
            return "file not found"
        if path.is_dir():
            return "a folder, not an image file"
        if not path.is_file():
            return "not a regular file (a FIFO, socket or device)"
    except OSError as e:  # a name too long, a loop of links...
        return e.strerror or type(e).__name__
    return None


def scan_folder(root: str | Path) -> FileList:
    """List image files of ``root/<class>/...`` or ``root/{train,val,test}/<class>/...``.

    Files with an image extension are candidates (they may still fail to decode); other
    files and hidden entries are ignored and counted; FIFOs and broken links are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise CnnlabError(f"data.source {str(root)!r} is not a directory of class folders")
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    presplit = "train" in subdirs and set(subdirs) <= set(SPLIT_NAMES)
    tops = [(root / s, s) for s in SPLIT_NAMES if s in subdirs] if presplit else [(root, None)]
    class_names = sorted(
        {c.name for top, _ in tops for c in top.iterdir() if c.is_dir() and not c.name.startswith(".")}
    )
    if len(class_names) < 2:
        raise CnnlabError(
            f"data.source {str(root)!r} needs at least two class folders (root/<class>/image.png, "
            f"optionally under train/ val/ test/); found {len(class_names)}"
        )
    index = {c: i for i, c in enumerate(class_names)}
    files: list[Path] = []
    labels: list[int] = []
    split_of: list[str | None] = []
    skipped: list[dict[str, str]] = []
    ignored = 0
    for top, split in tops:
        for cls in sorted(p for p in top.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for dirpath, dirnames, filenames in os.walk(cls):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    path = Path(dirpath) / name
                    if name.startswith("."):
                        continue
                    if path.suffix.lower() not in IMAGE_EXTENSIONS:
                        ignored += 1
                        continue
                    reason = usable(path)
                    if reason:
                        skipped.append({"path": str(path.relative_to(root)), "reason": reason})
                        continue
                    files.append(path)
                    labels.append(index[cls.name])
                    split_of.append(split)
    if not files:
        raise CnnlabError(f"data.source {str(root)!r} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return FileList(root, files, np.asarray(labels, dtype=np.int64), class_names, split_of, skipped, ignored)


def _sniff_delimiter(path: Path, sample: str) -> str:
    if path.suffix.lower() in {".tsv", ".tab"}:
        return "\t"
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def read_label_csv(
    path: str | Path, image_root: str | Path | None = None, delimiter: str | None = None, label_sep: str = " "
) -> FileList:
    """Read a ``path,label`` (or ``path,"l1 l2"`` multi-label) file.

    A header row is recognised by its column names (path/file/filename/image... and
    label/labels/class/tags...); without one the first two columns are path and label.
    Several labels in a cell, separated by ``label_sep``, make the dataset multi-label. A header's
    ``group`` column (also group_id, subject, patient, scene) names each image's group: the split
    and CV folds keep a group together. Paths are relative to ``image_root`` (default: the CSV's folder).

    Raises:
        CnnlabError: naming the file and line of a malformed row.
    """
    path = Path(path)
    text = read_text_file(path, "label file")
    delim = delimiter or _sniff_delimiter(path, text[:4096])
    try:
        rows = [
            (n, r)
            for n, r in enumerate(csv.reader(text.splitlines(), delimiter=delim), start=1)
            if r and any(c.strip() for c in r)
        ]
    except csv.Error as e:  # a field over the csv module's limit (128 KB), a stray quote
        raise CnnlabError(f"label file {str(path)!r} is not a CSV file cnnlab can read ({e})") from None
    if not rows:
        raise CnnlabError(f"label file {str(path)!r} is empty")
    head = [c.strip().lower() for c in rows[0][1]]
    path_col, label_col, group_col = 0, 1, None
    if any(h in PATH_COLUMNS for h in head) or any(h in LABEL_COLUMNS for h in head):
        path_col = next((i for i, h in enumerate(head) if h in PATH_COLUMNS), 0)
        label_col = next((i for i, h in enumerate(head) if h in LABEL_COLUMNS), 1 if path_col == 0 else 0)
        group_col = next((i for i, h in enumerate(head) if h in GROUP_COLUMNS), None)
        rows = rows[1:]
    root = Path(image_root) if image_root else path.parent
    entries: list[tuple[Path, list[str], str]] = []
    for line, row in rows:
        if len(row) <= max(path_col, label_col, group_col or 0):
            raise CnnlabError(f"{path}:{line}: expected a path and a label column (delimiter {delim!r}), got {row!r}")
        names = [t for t in (row[label_col].split(label_sep) if label_sep else [row[label_col]]) if t.strip()]
        if not row[path_col].strip() or not names:
            raise CnnlabError(f"{path}:{line}: empty path or label")
        group = row[group_col].strip() if group_col is not None else ""
        if group_col is not None and not group:
            raise CnnlabError(f"{path}:{line}: empty {head[group_col]!r} cell; give every image its group")
        entries.append((root / row[path_col].strip(), [t.strip() for t in names], group))
    multilabel = any(len(set(names)) > 1 for _, names, _ in entries)
    classes = sorted({t for _, names, _ in entries for t in names})
    if len(classes) < 2:
        raise CnnlabError(f"label file {str(path)!r} names {len(classes)} class; a classifier needs at least 2")
    index = {c: i for i, c in enumerate(classes)}
    files: list[Path] = []
    labels: list[Any] = []  # class indices, or one multi-hot row per file
    skipped: list[dict[str, str]] = []
    groups: list[str] = []
    for p, names, group in entries:
        reason = usable(p)
        if reason:
            skipped.append({"path": str(p), "reason": reason})
            continue
        files.append(p)
        groups.append(group)
        if multilabel:
            hot = np.zeros(len(classes), np.uint8)
            hot[[index[t] for t in names]] = 1
            labels.append(hot)
        else:
            labels.append(index[names[0]])
    if not files:
        raise CnnlabError(
            f"none of the {len(entries)} files listed in {str(path)!r} exist under {str(root)!r}; "
            "set data.image_root (--image-root)"
        )
    arr = np.stack(labels) if multilabel else np.asarray(labels, dtype=np.int64)
    return FileList(
        root, files, arr, classes, [None] * len(files), skipped, groups=groups if group_col is not None else None
    )


CSV_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")


def is_label_file(source: str) -> bool:
    p = Path(source)
    return p.is_file() and p.suffix.lower() in CSV_SUFFIXES


def list_files(
    source: str, image_root: str | None = None, delimiter: str | None = None, label_sep: str = " "
) -> FileList:
    """The FileList of a folder tree or a CSV/TSV label file."""
    if is_label_file(source):
        return read_label_csv(source, image_root, delimiter, label_sep)
    if Path(source).is_dir():
        return scan_folder(source)
    problem = not_regular(source) if Path(source).exists() else None
    if problem:
        raise CnnlabError(f"data.source {source!r} {problem}")
    raise CnnlabError(
        f"data.source {source!r}: not a built-in dataset, a folder of class folders, "
        f"or a label file ({', '.join(CSV_SUFFIXES)})"
    )


def excluded_images(path: str, paths: list[str] | None, n: int) -> np.ndarray:
    """The dataset indices a ``data.exclude`` CSV names, by its ``path`` column (file sources) or
    its ``index`` column (any source): a label audit's CSV, or rows kept from it."""
    text = read_text_file(path, "data.exclude")
    try:
        rows = list(csv.DictReader(text.splitlines()))
    except csv.Error as e:
        raise CnnlabError(f"data.exclude {path!r} is not a CSV file cnnlab can read ({e})") from None
    cols = set(rows[0]) if rows else set()
    if "path" in cols and paths is not None:
        where = {shown_path(p): i for i, p in enumerate(paths)}  # as a label audit writes them
        found = [where.get(r["path"]) for r in rows]
    elif "index" in cols:
        try:
            found = [int(r["index"]) if 0 <= int(r["index"]) < n else None for r in rows]
        except (ValueError, TypeError):  # a word, or a row shorter than its header
            raise CnnlabError(f"data.exclude {path!r}: the index column must hold whole numbers") from None
    else:
        raise CnnlabError(
            f"data.exclude {path!r}: needs a header with a 'path' column (image files) or an 'index' column "
            "(dataset positions), as cnnlab cv --audit-labels writes"
        )
    missing = sum(i is None for i in found)
    if missing:
        log.warning("data.exclude %s: %d of %d rows name no image of this data; ignored", path, missing, len(rows))
    log.info("data.exclude: %d images left out of training and validation", len(rows) - missing)
    return np.asarray([i for i in found if i is not None], np.int64)
