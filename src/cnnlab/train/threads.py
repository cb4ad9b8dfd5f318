"""PyTorch's CPU thread count, chosen from what the machine has free.

PyTorch's intra-op threads meet at a barrier after every operation, so when another process keeps
one of two cores busy, two threads wait on each other and a step takes several times longer
(measured here: 2–9×); one thread on the free core does not. With ``train.threads: auto`` the
trainer looks after ¾ s of training and then every few seconds at how much CPU the *other*
processes used (/proc/stat minus this process's own time) and trains on the cores they leave free.
A fixed ``train.threads: N`` keeps N: thread counts change float summation order, so bitwise-equal
reruns under any load need a fixed N.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator

import torch

from cnnlab.train.callbacks import Callback
from cnnlab.train.state import LoopState

log = logging.getLogger(__name__)
HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (None where /proc/stat is missing)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / HZ


def _children() -> list[int]:
    """This process's live children (its data-reading workers, a decode pool), where Linux lists them."""
    pids: list[int] = []
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as f:
                pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


def own_busy_seconds() -> float:
    """CPU seconds of this process and its live children: its own data workers are not 'others'."""
    t = os.times()
    total = t.user + t.system
    for pid in _children():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / HZ  # utime, stime
        except (OSError, ValueError, IndexError):
            continue  # it exited meanwhile
    return total


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class ThreadPolicy(Callback):
    """Sets ``torch.set_num_threads`` at the start and, with ``auto``, after the first ``first``
    seconds of training (one window: until then a busy core can make each step several times
    slower) and then whenever other processes' CPU use has changed the number of free cores for two
    windows of ``interval`` seconds in a row (not a passing spike)."""

    order = 0  # before anything else of the epoch

    def __init__(self, setting: str | int, interval: float = 3.0, first: float = 0.75):
        self.setting, self.interval, self.first = setting, interval, first
        self._decided = False
        self.initial = torch.get_num_threads()
        self.most = max(1, min(usable_cores(), self.initial))
        self._mark: tuple[float, float, float] | None = None
        self._pending: int | None = None
        self.changes: list[tuple[float, int]] = []

    def on_train_begin(self, loop: LoopState) -> None:
        if self.setting != "auto":
            torch.set_num_threads(int(self.setting))
            return
        self._mark = self._sample()

    def on_train_end(self, loop: LoopState) -> None:
        torch.set_num_threads(self.initial)  # the process's own setting again, for what comes next

    def _sample(self) -> tuple[float, float, float] | None:
        busy = machine_busy_seconds()
        return None if busy is None else (time.monotonic(), busy, own_busy_seconds())

    def wanted(self, others: float) -> int:
        """Threads for the cores left free when other processes keep ``others`` cores busy."""
        free = (os.cpu_count() or 1) - others
        return max(1, min(self.most, int(free + 0.25)))

    def on_batch_end(self, loop: LoopState, step: int, logs: dict[str, float]) -> None:
        if self._mark is None or time.monotonic() - self._mark[0] < (self.interval if self._decided else self.first):
            return
        now = self._sample()
        if now is None:
            self._mark = None
            return
        wall = now[0] - self._mark[0]
        others = max(0.0, (now[1] - self._mark[1]) - (now[2] - self._mark[2])) / wall
        self._mark = now
        want = self.wanted(others)
        first, self._decided = not self._decided, True
        if want == torch.get_num_threads():
            self._pending = None
        elif first or self._pending == want:  # the first look, or the same for two windows
            log.info(
                "other processes keep %.1f cores busy: training on %d thread%s", others, want, "" if want == 1 else "s"
            )
            torch.set_num_threads(want)
            self.changes.append((time.time(), want))
            self._pending = None
        else:
            self._pending = want


@contextlib.contextmanager
def free_core_threads(window: float = 0.3) -> Iterator[int]:
    """Within the block, torch runs on as many threads as the cores other processes leave free (what
    ``ThreadPolicy("auto")`` gives training), judged over ``window`` seconds: a timing taken inside
    (a study's probe, its latency column) then measures what training and prediction get beside a busy
    core, not a thread fighting it. Yields the thread count."""
    start, mine = machine_busy_seconds(), own_busy_seconds()
    t0 = time.monotonic()
    time.sleep(window)
    before = torch.get_num_threads()
    if start is None:
        threads = before
    else:
        busy, own = machine_busy_seconds() or start, own_busy_seconds()
        others = max(0.0, (busy - start) - (own - mine)) / max(time.monotonic() - t0, 1e-6)
        threads = ThreadPolicy("auto").wanted(others)
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
