"""A sweep spec (YAML): the base config, the search space, the method, the budget, the objective
and the pruner; checked whole before any trial starts."""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cnnlab.core.errors import CnnlabError
from cnnlab.core.monitor import direction, monitorable
from cnnlab.core.registry import did_you_mean
from cnnlab.core.schema import Config, config_keys, no_bool_as_number, parse_duration
from cnnlab.core.yamlio import load_yaml, read_yaml_file
from cnnlab.workflows.resolve import build_config

# set by the sweep itself for every trial: a space over them would be meaningless or dishonest
RESERVED = {
    "run.out": "each trial's run folder is chosen by the sweep",
    "train.monitor": "the trial monitors the sweep's objective",
    "train.evals_per_epoch": "every trial is pruned at the same fractions of an epoch; set it in base",
}
METHODS = ("grid", "random", "tpe", "cmaes", "gp")
MAX_GRID = 10**6  # points a grid may have without 'trials' bounding it
GRID_IN_MEMORY = 10**5  # points Optuna's GridSampler may list; a larger grid is drawn lazily


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    _no_bool_as_number = field_validator("*", mode="before")(classmethod(no_bool_as_number))


class Param(_Strict):
    """One dimension of the search space: ``values`` (a choice), or ``low``/``high`` of an int or a
    float (``log`` for a log scale, ``step`` for a lattice)."""

    type: Literal["choice", "int", "float", "log-float"] = "choice"
    values: list[Any] | None = Field(None, min_length=1, max_length=1000)
    low: float | None = None
    high: float | None = None
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _shape(self) -> Param:
        if self.type == "choice":
            if not self.values:
                raise ValueError("a choice needs 'values: [a, b, …]'")
            if self.low is not None or self.high is not None:
                raise ValueError("a choice takes 'values', not low/high")
            return self
        if self.values is not None:
            raise ValueError(f"type {self.type} takes low/high, not values (use type: choice)")
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"type {self.type} needs low < high")
        if self.type == "log-float":
            self.type, self.log = "float", True
        if self.log and self.low <= 0:
            raise ValueError("a log scale needs low > 0")
        if self.log and self.step:
            raise ValueError("log and step cannot be combined")
        if self.type == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("an int range needs whole numbers for low and high")
        return self

    def grid_values(self, name: str) -> list[Any]:
        """The values a grid visits: a choice's values, or an int/float range with a step."""
        if self.type == "choice":
            return list(self.values or [])
        if not self.step:
            raise CnnlabError(f"sweep space {name!r}: a grid needs a choice or a range with 'step'")
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1  # type: ignore[operator]  # low/high/step are set for this type (the validator checks)
        vals = [self.low + i * self.step for i in range(n)]  # type: ignore[operator]  # low/high/step are set for this type (the validator checks)
        return [int(round(v)) for v in vals] if self.type == "int" else [round(v, 12) for v in vals]

    def grid_size(self, name: str) -> int:
        """How many values a grid visits, computed, not listed."""
        if self.type == "choice":
            return len(self.values or [])
        if not self.step:
            raise CnnlabError(f"sweep space {name!r}: a grid needs a choice or a range with 'step'")
        return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1  # type: ignore[operator]  # low/high/step are set for this type (the validator checks)

    def grid_value(self, j: int) -> Any:
        """The j-th value a grid visits (as Optuna stores it), computed, not listed."""
        if self.type == "choice":
            return _hashable(self.values or [])[j]
        v = self.low + j * self.step  # type: ignore[operator]  # low/high/step are set for this type (the validator checks)
        return int(round(v)) if self.type == "int" else round(v, 12)

    def size(self) -> int | None:
        """Distinct values of this dimension (None: continuous)."""
        if self.type == "choice":
            return len({json.dumps(v, sort_keys=True) for v in self.values or []})
        if self.type == "float" and not self.step:
            return None
        step = self.step or 1
        return int(math.floor((self.high - self.low) / step + 1e-9)) + 1  # type: ignore[operator]  # low/high/step are set for this type (the validator checks)

    def edges(self) -> list[Any]:
        """Values that show whether the config accepts this dimension: every choice, both ends."""
        if self.type == "choice":
            return list(self.values or [])
        return [int(self.low), int(self.high)] if self.type == "int" else [self.low, self.high]  # type: ignore  # low/high/step are set for this type (the validator checks)


class Pruner(_Strict):
    type: Literal["median", "halving", "hyperband", "none"] = "median"
    startup_trials: int = Field(4, ge=0, description="trials finished before any is pruned (median)")
    warmup_epochs: int = Field(
        1,
        ge=0,
        description="epochs a trial runs before it can be pruned; the first rung of halving/hyperband "
        "(0: after the first validation, a fraction of an epoch with base train.evals_per_epoch)",
    )
    reduction_factor: int = Field(
        3,
        ge=2,
        le=10,
        description="halving/hyperband: a rung is this many times the one below; 1 in this many trials goes on",
    )
    recheck: bool = Field(
        True,
        description="halving: a promotion stands only while the trial stays in the top 1/reduction_factor "
        "of every rung it passed as later trials arrive (else the first trials of parallel workers, promoted "
        "with no one to beat, train to the end)",
    )


class CV(_Strict):
    folds: int = Field(3, ge=2, le=50)
    repeats: int = Field(1, ge=1, le=20)


class SweepSpec(_Strict):
    """What ``cnnlab sweep SPEC.yaml`` reads (see examples/sweep-digits.yaml)."""

    name: str | None = Field(None, max_length=200)
    base: dict[str, Any] = Field(default_factory=dict, description="a train config (sections data, model, …)")
    config: str | None = Field(None, description="a train config file the base starts from")
    space: dict[str, Param | list[Any]] = Field(min_length=1)
    method: Literal["grid", "random", "tpe", "cmaes", "gp"] = "tpe"
    trials: int | None = Field(None, ge=1, le=100_000)
    timeout: float | None = Field(None, description="wall-time budget: seconds or 90s/20m/2h")
    objective: str = "val_acc"
    pruner: Pruner | Literal["median", "halving", "hyperband", "none"] = Field(default_factory=Pruner)
    cv: CV | None = None
    seed: int = Field(0, ge=0, le=2**31 - 1)
    start: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=100,
        description="points tried first, each a value of every space key (e.g. the default recipe)",
    )

    @field_validator("space")
    @classmethod
    def _params(cls, space: dict[str, Any]) -> dict[str, Param]:
        return {k: Param(values=v) if isinstance(v, list) else v for k, v in space.items()}

    @field_validator("pruner")
    @classmethod
    def _pruner(cls, p: Any) -> Pruner:
        return Pruner(type=p) if isinstance(p, str) else p

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, t: Any) -> float | None:
        return None if t is None else parse_duration(t)

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return "minimize" if direction(self.objective) == "min" else "maximize"

    def grid(self) -> dict[str, list[Any]]:
        """The grid's values per dimension, as Optuna stores them (list values as JSON text)."""
        return {k: _hashable(p.grid_values(k)) for k, p in self.space.items()}  # type: ignore[union-attr]  # low/high/step are set for this type (the validator checks)

    def grid_size(self) -> int:
        sizes = [
            p.grid_size(k) for k, p in self.space.items() if isinstance(p, Param)
        ]  # a validated space holds Params
        return int(math.prod(sizes))

    def space_size(self) -> int | None:
        """How many distinct configurations the space holds (None: a continuous dimension)."""
        sizes = [p.size() for p in self.space.values()]  # type: ignore[union-attr]  # low/high/step are set for this type (the validator checks)
        return None if None in sizes else math.prod(sizes)  # type: ignore[arg-type]  # low/high/step are set for this type (the validator checks)

    def budget(self) -> int | None:
        """Trials to finish: the spec's count, capped by the number of distinct configurations (a
        grid: all of them when no count is given); None: only the time budget bounds the sweep."""
        size = self.space_size()
        if self.method == "grid":
            return min(self.trials or self.grid_size(), self.grid_size())
        if self.trials is not None and size is not None:
            return min(self.trials, size)
        return self.trials


def load_spec(path: str | Path) -> SweepSpec:
    """Read and check a sweep spec: its fields, the objective (a validation metric, direction
    from the one table), every space key and value against the config, the base config."""
    tree = read_yaml_file(path, "sweep spec")
    if not isinstance(tree, dict):
        raise CnnlabError(f"sweep spec {str(path)!r} must be a mapping (base, space, method, trials, objective, …)")
    return check_spec(tree, str(path))


def check_spec(tree: dict[str, Any], where: str) -> SweepSpec:
    try:
        spec = SweepSpec.model_validate(tree)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(
            str(p)
            for p in err["loc"]
            if not str(p).startswith(("function-", "union["))
            and p not in ("Param", "list[any]", "Pruner", "str", "float", "constrained-str")
        )
        known = ", ".join(SweepSpec.model_fields)
        if err["type"] == "extra_forbidden" and "." not in loc:
            raise CnnlabError(
                f"{where}: unknown field {loc!r}; a sweep spec has {known}{did_you_mean(loc, SweepSpec.model_fields)}"
            ) from None
        raise CnnlabError(f"{where}: {loc}: {err['msg'].removeprefix('Value error, ')}") from None
    if spec.config is not None:
        file = load_yaml(spec.config)
        spec.base = {sec: {**(file.get(sec) or {}), **(spec.base.get(sec) or {})} for sec in {*file, *spec.base}}
    _check_objective(spec, where)
    _check_space(spec, where)
    if spec.trials is None and spec.timeout is None and spec.method != "grid":
        raise CnnlabError(f"{where}: give a budget: trials: N and/or timeout: 20m (a grid runs its points)")
    needs = {"cmaes": "cmaes", "gp": "scipy"}.get(spec.method)  # Optuna imports them at the first sample
    if needs and importlib.util.find_spec(needs) is None:
        raise CnnlabError(f"{where}: method {spec.method!r} needs the {needs} package: pip install {needs}")
    return spec


def _check_objective(spec: SweepSpec, where: str) -> None:
    name = spec.objective
    if name.startswith("test_") or name.startswith("train_"):
        raise CnnlabError(
            f"{where}: objective {name!r}: a sweep tunes on validation figures only "
            "(val_<metric>); the test split is for the final model, used once"
        )
    if not name.startswith("val_"):
        name = spec.objective = f"val_{name}"
    bare, known = name.removeprefix("val_"), monitorable()
    if bare not in known:
        import difflib

        aliases = {"accuracy": "acc", "f1": "macro_f1", "auc": "weighted_auc", "map": "mean_average_precision"}
        close = difflib.get_close_matches(bare, [*known, *aliases], n=1, cutoff=0.6)
        hint = f"; did you mean 'val_{aliases.get(close[0], close[0])}'?" if close else ""
        raise CnnlabError(
            f"{where}: objective {spec.objective!r} is not a monitorable metric; use val_ and one "
            f"of {', '.join(known)}{hint}"
        )


def _check_space(spec: SweepSpec, where: str) -> None:
    keys = config_keys()
    for key, p in spec.space.items():
        if key in RESERVED:
            raise CnnlabError(f"{where}: space {key!r} cannot be searched: {RESERVED[key]}")
        if key not in keys:
            raise CnnlabError(f"{where}: space {key!r} is not a config key{did_you_mean(key, keys)}")
    base = trial_config(spec, {}, where)
    if spec.method == "grid":
        points = spec.grid_size()  # each dimension has grid values (counted, not listed)
        if points > MAX_GRID and spec.trials is None:
            raise CnnlabError(
                f"{where}: the grid has {points:,} points, more than {MAX_GRID:,}; give 'trials: N' to visit N of "
                "them (drawn without listing the grid), or coarsen a step"
            )
    for key, p in spec.space.items():
        for v in p.edges():  # type: ignore[union-attr]  # low/high/step are set for this type (the validator checks)
            try:
                build_config(base.model_dump(mode="json"), {key: v})
            except CnnlabError as e:
                raise CnnlabError(f"{where}: space {key!r} value {v!r} is not accepted: {e}") from None
    for i, point in enumerate(spec.start):
        problem = _off_space(spec, point)
        if problem:
            raise CnnlabError(f"{where}: start[{i}]: {problem}")
    if base.data.val_size == 0 and not spec.cv:
        raise CnnlabError(f"{where}: data.val_size is 0, so there is no validation split to tune on")


def _off_space(spec: SweepSpec, point: dict[str, Any]) -> str | None:
    """Why a start point is not a point of the space (None: it is)."""
    if set(point) != set(spec.space):
        return f"give a value of each of {', '.join(spec.space)} (got {', '.join(point) or 'none'})"
    for key, v in point.items():
        p = spec.space[key]
        assert isinstance(p, Param)
        if p.type == "choice":
            if v not in (p.values or []):
                return f"{key}={v!r} is not one of its values {p.values}"
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not p.low <= v <= p.high:  # type: ignore[operator]  # low/high are set for ranges
            return f"{key}={v!r} is not a number within [{p.low}, {p.high}]"
        elif p.type == "int" and v != int(v):
            return f"{key}={v!r} is not a whole number"
    return None


def encode_point(spec: SweepSpec, point: dict[str, Any]) -> dict[str, Any]:
    """A start point as Optuna stores it (list choices as JSON text)."""
    return {
        k: json.dumps(v) if _holds_lists(spec.space[k]) else v  # type: ignore[arg-type]  # a validated space holds Params
        for k, v in point.items()
    }


def trial_config(spec: SweepSpec, params: dict[str, Any], where: str = "sweep spec", out: str | None = None) -> Config:
    """The config of one trial: the base, the trial's values, the objective as the monitor."""
    over = {**params, "train.monitor": spec.objective}
    if out is not None:
        over["run.out"] = out
    return build_config(spec.base, over, source=f"{where} base")


def sampler_for(spec: SweepSpec, seed: int) -> Any:
    """The Optuna sampler of one worker (each worker its own seed; TPE with the constant liar, so
    that parallel workers do not all propose the point the others are already trying)."""
    import optuna

    if spec.method == "grid":
        if spec.grid_size() > GRID_IN_MEMORY:
            return _lazy_grid_class()(spec, seed)
        return _grid_class()(spec.grid(), seed=seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.method == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if spec.method == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)


@functools.cache
def _grid_class() -> Any:
    import optuna

    class Grid(optuna.samplers.GridSampler):
        """Optuna's grid (trial n gets point n, so parallel workers start on different points),
        without its call to study.stop() after the last point: cnnlab's workers ask and tell
        themselves and stop when the budget (the grid's size) is used."""

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            pass

    return Grid


@functools.cache
def _lazy_grid_class() -> Any:
    import optuna

    class LazyGrid(optuna.samplers.BaseSampler):
        """A grid too large to list (Optuna's GridSampler lists every point): trial n visits point
        (a·n + b) mod size, a bijection for a coprime with size, so that trials (and parallel
        workers) visit distinct points in a seeded order; each point's values are computed from
        its index digit by digit. Written by hand: Optuna has no lazy grid."""

        def __init__(self, spec: SweepSpec, seed: int):
            self.params = [(k, p) for k, p in spec.space.items() if isinstance(p, Param)]
            self.radix = [p.grid_size(k) for k, p in self.params]
            self.size = math.prod(self.radix)
            rng = random.Random(0)  # the same order for every worker: distinct trials, distinct points
            self.b = rng.randrange(self.size)
            self.a = rng.randrange(1, self.size) if self.size > 1 else 1
            while math.gcd(self.a, self.size) != 1:
                self.a += 1

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return {}

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
            return {}

        def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
            index = (self.a * trial.number + self.b) % self.size
            for (key, p), r in zip(self.params, self.radix):
                index, digit = divmod(index, r)
                if key == name:
                    return p.grid_value(digit)
            raise KeyError(name)

    return LazyGrid


def periods_per_epoch(spec: SweepSpec) -> int:
    """Validations per epoch of every trial (base ``train.evals_per_epoch``): the pruners' unit."""
    return trial_config(spec, {}).train.evals_per_epoch  # as validated (a YAML "3" is 3), not the raw base


def pruner_for(spec: SweepSpec) -> Any:
    """Optuna's pruner of the spec, its resources counted in validations (epochs, or fractions of
    one with base ``train.evals_per_epoch``)."""
    import optuna

    p: Pruner = spec.pruner  # type: ignore[assignment]  # the validator made it a Pruner
    k = periods_per_epoch(spec)
    first = max(1, p.warmup_epochs * k)
    if p.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs * k + 1)
    if p.type == "halving":
        halving = optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=p.reduction_factor)
        return RecheckedHalving(halving, p.reduction_factor) if p.recheck else halving
    if p.type == "hyperband":
        # the top rung is the base's epoch count (Optuna's "auto" waits for a finished trial, so
        # parallel workers would train their first trials to the end unpruned)
        given = "epochs" in (spec.base.get("train") or {}) and "train.epochs" not in spec.space
        epochs = trial_config(spec, {}).train.epochs if given else None  # as validated, like k
        top = epochs * k if epochs is not None and epochs * k > first else "auto"
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=top, reduction_factor=p.reduction_factor)
    return optuna.pruners.NopPruner()


class RecheckedHalving:
    """Optuna's asynchronous successive halving, whose promotions made with too few trials to judge
    by are re-judged as trials arrive.

    ASHA promotes a trial the moment it is in the top 1/η of those that have reached its rung so
    far, so the first trials at a rung are promoted with no one to beat; with two workers, two of the
    seed-000 sweep's first three trials trained all 10 epochs that way (30 % of its worker time).
    Here a promotion made while fewer than η trials had reached the rung is provisional: at each
    later report the trial is pruned if it is no longer in the top 1/η of that rung (the best, while
    fewer than η are there), and the promotion stands once η trials have reached the rung with the
    trial in their top 1/η. Promotions made among η or more stand as ASHA made them. Hand-written
    because Optuna has no such option (its ``bootstrap_count`` prunes the first arrivals at every
    rung instead, the top rung's after 90 % of their training); Optuna's pruner records the rungs
    (``completed_rung_N``). The provisional promotions are this worker's memory: a retried trial
    starts without them."""

    def __init__(self, halving: Any, reduction_factor: int):
        self.halving, self.eta = halving, reduction_factor
        self.provisional: dict[int, set[str]] = {}  # trial id → rungs it passed with fewer than η there

    def prune(self, study: Any, trial: Any) -> bool:
        known = set(trial.system_attrs)
        if self.halving.prune(study, trial):
            return True
        tid = trial._trial_id
        maximize = study.direction.name == "MAXIMIZE"
        others = study.get_trials(deepcopy=False)
        mine = next((t for t in others if t._trial_id == tid), trial)  # with the rung just recorded
        for key in (k for k in mine.system_attrs if k.startswith("completed_rung_") and k not in known):
            if sum(key in t.system_attrs for t in others) < self.eta:
                self.provisional.setdefault(tid, set()).add(key)
        for key in sorted(self.provisional.get(tid, ())):
            ranked = sorted((t.system_attrs[key] for t in others if key in t.system_attrs), reverse=maximize)
            cut = ranked[max(1, len(ranked) // self.eta) - 1]
            value = mine.system_attrs[key]
            if (value < cut) if maximize else (value > cut):
                self.provisional.pop(tid, None)
                return True
            if len(ranked) >= self.eta:
                self.provisional[tid].discard(key)  # judged among η or more: it stands
        return False


def suggest(trial: Any, spec: SweepSpec) -> dict[str, Any]:
    """Ask the trial for a value of every dimension."""
    out = {}
    for key, p in spec.space.items():
        assert isinstance(p, Param)
        if p.type == "choice":
            value = trial.suggest_categorical(key, _hashable(p.values or []))
            out[key] = json.loads(value) if _holds_lists(p) else value
        elif p.type == "int":
            out[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)  # type: ignore  # low/high/step are set for this type (the validator checks)
        else:
            out[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return out


def _holds_lists(p: Param) -> bool:
    return any(isinstance(v, (list, dict)) for v in (p.values or []))


def _hashable(values: list[Any]) -> list[Any]:
    """Optuna's choices are None/bool/int/float/str: list values (hidden sizes) go as JSON text."""
    if any(isinstance(v, (list, dict)) for v in values):
        return [json.dumps(v) for v in values]
    return values


def decode_params(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's stored params as config values (JSON text of list choices back to lists)."""
    return {
        k: json.loads(v)
        if k in spec.space and _holds_lists(spec.space[k]) and isinstance(v, str)  # type: ignore  # low/high/step are set for this type (the validator checks)
        else v
        for k, v in params.items()
    }
