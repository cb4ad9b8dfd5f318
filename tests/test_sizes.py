"""Room sizes as a ratchet over all of ``src``: a function past 60 lines, a file past 400 lines
(DESIGN.md's limits) or a function past McCabe 10 fails, unless it is one of the offenders named
below, which may only shrink. An offender that is back within the limit must leave the list, so it
cannot silently regrow. (ruff's own max-complexity in pyproject.toml stops at today's worst case, 16.)

When you shorten an offender, lower its figure (or delete its line); never raise one or add one."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "cnnlab"
FUNCTION_LINES, FILE_LINES, COMPLEXITY = 60, 400, 10

# function (path under src/cnnlab : qualified name) → its lines at the start of wave 4, or less
LONG_FUNCTIONS = {
    "cli/commands/deploy.py:register": 157,
    "cli/commands/tools.py:register": 104,
    "data/cache.py:decode_images": 120,
    "data/files.py:read_label_csv": 77,
    "data/inspect.py:inspect_dataset": 130,
    "data/inspect.py:_inspect_builtin": 78,
    "data/pipeline.py:prepare_data": 85,
    "data/pipeline.py:load_shards": 61,
    "models/pretrained.py:timm_spec": 61,
    "models/pretrained.py:tv_spec": 67,
    "reports/run.py:write_comparison": 106,
    "reports/study.py:_figures": 65,
    "reports/study.py:_plan_section": 63,
    "train/engines/torch_engine.py:TorchEngine.prepare": 66,
    "workflows/cv/folds.py:cross_validate": 69,
    "workflows/deploy/batch.py:predict_files": 78,
    "workflows/deploy/export.py:export_run": 99,
    "workflows/evaluation.py:evaluate_checkpoint": 95,
    "workflows/sanity.py:explain_sanity": 62,
    "workflows/scoring.py:evaluate_keep_head": 73,
    "workflows/study/results.py:collect": 111,
    "workflows/study/run.py:_start": 97,
    "workflows/sweep/report.py:_figures": 103,
    "workflows/sweep/runner.py:work": 61,
    "workflows/sweep/state.py:open_sweep": 64,
}

# file under src/cnnlab → its lines at the start of wave 4, or less
LONG_FILES = {
    "core/schema.py": 597,
    "data/cache.py": 426,
    "data/pipeline.py": 584,
    "data/shards.py": 444,
    "data/sources.py": 559,
    "reports/run.py": 528,
    "reports/study.py": 577,
    "runs/store.py": 502,
    "train/engines/torch_engine.py": 432,
    "workflows/deploy/serve.py": 466,
    "workflows/evaluation.py": 402,
    "workflows/study/results.py": 444,
    "workflows/study/run.py": 475,
    "workflows/sweep/report.py": 465,
    "workflows/sweep/runner.py": 462,
    "workflows/sweep/spec.py": 503,
    "workflows/training.py": 497,
}

# function (path under src/cnnlab : name, as ruff names it) → its McCabe complexity at the start of wave 4, or less
COMPLEX_FUNCTIONS = {
    "cli/flags.py:_argparse_kwargs": 11,
    "data/cache.py:decode_images": 16,
    "data/files.py:scan_folder": 11,
    "data/files.py:read_label_csv": 13,
    "data/pipeline.py:prepare_data": 12,
    "data/pipeline.py:load_shards": 13,
    "data/shards.py:_index_problem": 13,
    "models/pretrained.py:timm_spec": 11,
    "runs/tables.py:read_table": 12,
    "train/engines/scratch_engine.py:_unsupported": 12,
    "workflows/deploy/batch.py:predict_files": 16,
    "workflows/deploy/serve.py:__call__": 11,
    "workflows/evaluation.py:evaluate_checkpoint": 14,
    "workflows/scoring.py:read_label_map": 15,
    "workflows/study/results.py:collect": 16,
    "workflows/study/run.py:_train_all": 11,
    "workflows/sweep/runner.py:_run_trial": 12,
    "workflows/sweep/spec.py:_check_space": 12,
    "workflows/sweep/state.py:open_sweep": 12,
}


def complexities() -> dict[str, int]:
    """Every function of src/cnnlab over McCabe 10 → its complexity (ruff's C901, as `make lint` runs it)."""
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(SRC), "--select", "C901", "--output-format", "json",
         "--config", f"lint.mccabe.max-complexity={COMPLEXITY}", "--exit-zero", "--no-cache"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = {}
    for row in json.loads(out.stdout):
        name, n = re.match(r"`(.+)` is too complex \((\d+) > \d+\)", row["message"]).groups()
        found[f"{Path(row['filename']).resolve().relative_to(SRC).as_posix()}:{name}"] = int(n)
    return found


def function_sizes() -> dict[str, int]:
    """Every function and method of src/cnnlab (nested ones too) → its length in lines."""
    sizes: dict[str, int] = {}

    def walk(node: ast.AST, where: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                sizes[f"{where}:{name}"] = child.end_lineno - child.lineno + 1
                walk(child, where, name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, where, prefix + child.name + ".")
            else:
                walk(child, where, prefix)

    for path in sorted(SRC.rglob("*.py")):
        walk(ast.parse(path.read_text()), path.relative_to(SRC).as_posix(), "")
    return sizes


def file_sizes() -> dict[str, int]:
    return {p.relative_to(SRC).as_posix(): len(p.read_text().splitlines()) for p in sorted(SRC.rglob("*.py"))}


def _ratchet(sizes: dict[str, int], limit: int, allowed: dict[str, int], what: str, unit: str = "lines") -> list[str]:
    problems = []
    for name, n in sizes.items():
        if n > limit and name not in allowed:
            problems.append(f"{name}: {n} {unit}, over the limit of {limit} for a {what} (split it)")
        elif name in allowed and n > allowed[name]:
            problems.append(f"{name}: {n} {unit}, grew past its listed {allowed[name]} (the list only shrinks)")
    for name, n in allowed.items():
        if sizes.get(name, 0) <= limit:
            problems.append(f"{name} is within {limit} {unit} now (or gone): delete its line from the list")
    return problems


def test_no_function_is_longer_than_60_lines_but_the_listed_offenders_which_only_shrink():
    problems = _ratchet(function_sizes(), FUNCTION_LINES, LONG_FUNCTIONS, "function")
    assert not problems, "\n".join(problems)


def test_no_file_is_longer_than_400_lines_but_the_listed_offenders_which_only_shrink():
    problems = _ratchet(file_sizes(), FILE_LINES, LONG_FILES, "file")
    assert not problems, "\n".join(problems)


def test_no_function_is_more_complex_than_mccabe_10_but_the_listed_offenders_which_only_shrink():
    found = complexities()
    problems = _ratchet(found, COMPLEXITY, COMPLEX_FUNCTIONS, "function", unit="McCabe complexity")
    assert not problems, "\n".join(problems)


def test_the_offender_lists_are_no_longer_than_at_the_start_of_wave_4():
    assert len(LONG_FUNCTIONS) <= 33 and len(LONG_FILES) <= 17 and len(COMPLEX_FUNCTIONS) <= 22
    assert max(COMPLEX_FUNCTIONS.values()) <= 16  # ruff's max-complexity in pyproject.toml


def test_the_ratchet_catches_a_new_long_function_a_grown_one_and_a_stale_entry():
    sizes = {"a.py:new": 61, "a.py:old": 70, "a.py:fixed": 40}
    problems = _ratchet(sizes, 60, {"a.py:old": 65, "a.py:fixed": 80}, "function")
    assert len(problems) == 3 and all(any(k in p for p in problems) for k in ("a.py:new", "a.py:old", "a.py:fixed"))
