"""The test-set ledger: every time a test split is scored, one line in ``$CNNLAB_CACHE/ledger.jsonl``
(which test split, by which run, under which configuration). A test set scored again and again by
many configurations is no longer an unbiased estimate; report, compare and study say how often."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from cnnlab.core.locations import cache_dir
from cnnlab.runs.store import RunFolder

__all__ = ["ledger_path", "record_test_scoring", "usage_of", "use_sentence"]


def ledger_path() -> Path:
    return cache_dir() / "ledger.jsonl"


def _configuration(run: RunFolder) -> str:
    """A digest of what was trained: the config without where its run folder is, how it logs, and
    its initialisation seed (N seeds of one recipe are one configuration, scored N times)."""
    cfg = run.read_config().model_dump(mode="json")
    cfg.pop("run", None)
    cfg.get("train", {}).pop("seed", None)
    return hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]


def record_test_scoring(run: RunFolder, what: str) -> None:
    """Append that ``run``'s test split was scored (``what``: train, evaluate, ...). Best effort: a
    read-only cache does not stop an evaluation."""
    entry = {
        "test_split": run.test_split_id(),
        "run": str(run.path.resolve()),
        "configuration": _configuration(run),
        "by": what,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    path = ledger_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # several processes append whole lines
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError:
        pass


def usage_of(test_split: str) -> dict[str, Any]:
    """How often ``test_split`` was scored: ``scored`` times, by ``configurations`` distinct configs
    in ``runs`` run folders (damaged lines are skipped)."""
    scored, configs, runs = 0, set(), set()
    try:
        lines = ledger_path().read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("test_split") == test_split:
            scored += 1
            configs.add(e.get("configuration"))
            runs.add(e.get("run"))
    return {"scored": scored, "configurations": len(configs), "runs": len(runs)}


def use_sentence(test_split: str) -> str | None:
    """'This test set has been scored N times by M configurations' when N > 1, else None."""
    use = usage_of(test_split)
    if use["scored"] <= 1:
        return None
    return (
        f"this test set ({test_split}) has been scored {use['scored']} times by {use['configurations']} "
        f"configuration{'s' if use['configurations'] != 1 else ''}: choosing among them on it makes its figures "
        "optimistic"
    )
