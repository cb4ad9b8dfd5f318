"""The metrics a run can monitor and their directions, derived from the metric catalogue: pure data
that the config schema, the checkpoint and early-stopping callbacks, the plateau schedule and sweep
objectives all read."""

from __future__ import annotations

from cnnlab.core.metrics import Direction, catalogue

__all__ = ["Direction", "direction", "monitorable"]

# the two figures every epoch has under their short history names (loss, acc); accuracy is "acc" there
_LOOP = {"loss": ("any", "min"), "acc": ("any", "max")}


def monitorable() -> dict[str, tuple[str, Direction]]:
    """Every metric that can be monitored (--monitor val_<name>, best checkpoint, early stopping, the
    plateau schedule, sweep objectives) → the data it exists for and its direction: the loop's loss
    and accuracy, and every other row of the catalogue (computed on validation when monitored)."""
    rows = {m.name: (m.kind, m.direction) for m in catalogue() if m.name != "accuracy"}
    return {**_LOOP, **rows}  # type: ignore[dict-item]


def direction(monitor: str) -> Direction:
    """'min' or 'max': whether lower or higher values of ``monitor`` (``val_<name>``,
    ``train_loss``/``train_acc`` or a bare name) are better, from :func:`monitorable`.

    Raises:
        ValueError: a metric whose direction is not declared (never guessed).
    """
    name = monitor.removeprefix("val_").removeprefix("train_")
    known = monitorable()
    if name not in known:
        raise ValueError(f"no direction is declared for metric {monitor!r}; known: {', '.join(known)}")
    return known[name][1]
