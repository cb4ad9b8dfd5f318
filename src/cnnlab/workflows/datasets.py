"""`cnnlab data shard`: a dataset decoded once, split as training would, written as shards."""

from __future__ import annotations

from pathlib import Path

from cnnlab.core.results import ShardIndex
from cnnlab.core.schema import Config
from cnnlab.data.pipeline import prepare_data
from cnnlab.data.shards import write_shards
from cnnlab.models.factory import get_spec

__all__ = ["shard_dataset"]


def shard_dataset(cfg: Config, out: str | Path, shard_mb: float = 100.0, progress: bool = True) -> ShardIndex:
    """Decode ``cfg.data`` at the size ``cfg.model`` wants, split it with ``data.split_seed``, write
    shards of about ``shard_mb`` MB into ``out``; returns the shard index."""
    data = prepare_data(cfg.data, get_spec(cfg.model.name), cfg.data.split_seed, progress=progress)
    return write_shards(data, out, shard_mb, progress=progress)
