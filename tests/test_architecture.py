"""The floor plan holds: every cnnlab import is at the top of its module, the import graph has no
cycle, cnnlab imports itself by name only in its two declared tables, and a trained run is used
(predict, export, serve) with the schema alone, without the training stack or plotting."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.api import EXPORTS
from cnnlab.cli.main import main
from cnnlab.inference.load import BACKENDS
from cnnlab.workflows.resolve import build_config
from tests.conftest import make_folder_dataset

SRC = Path(__file__).resolve().parents[1] / "src" / "cnnlab"
# module → its name table of modules it imports on first use (read here as import edges)
DYNAMIC = {"cnnlab.api": set(EXPORTS.values()), "cnnlab.inference.load": set(BACKENDS.values())}


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = ["cnnlab", *p.relative_to(SRC).with_suffix("").parts]
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


MODULES = _modules()


def _target(name: str) -> str:
    """The cnnlab module an imported dotted name lives in (``cnnlab.a.b.func`` → ``cnnlab.a.b``)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _type_checking_blocks(tree: ast.Module) -> set[int]:
    ids = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids |= {id(n) for n in ast.walk(node)}
    return ids


def _imports(module: str) -> tuple[set[str], list[str]]:
    """The cnnlab modules ``module`` imports when it runs, and its imports inside functions."""
    tree = ast.parse(MODULES[module].read_text())
    typing_only = _type_checking_blocks(tree)
    in_functions = {
        id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)
    }
    edges, nested = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{module}:{node.lineno} imports relatively; cnnlab imports are absolute"
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        names = [n for n in names if n.split(".")[0] == "cnnlab"]
        if names and id(node) in in_functions:
            nested.append(f"{module}:{node.lineno}")
        if id(node) not in typing_only:
            edges |= {_target(n) for n in names}
    return edges | DYNAMIC.get(module, set()), nested


def test_no_cnnlab_module_imports_another_inside_a_function():
    nested = [where for m in MODULES for where in _imports(m)[1]]
    assert not nested, f"imports inside functions (move them to the top of the module): {nested}"


def test_the_import_graph_of_cnnlab_has_no_cycle():
    graph = {m: _imports(m)[0] - {m} for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                pytest.fail("import cycle: " + " → ".join(path[path.index(n) :] + [m, n]))
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_cnnlab_imports_itself_by_name_only_in_its_two_declared_tables():
    users = sorted(m for m, p in MODULES.items() if "import_module(" in p.read_text() or "__import__(" in p.read_text())
    assert users == sorted(DYNAMIC), users
    assert all(t in MODULES for targets in DYNAMIC.values() for t in targets)


def test_every_api_name_resolves_and_is_defined_where_the_table_says():
    from cnnlab import api

    for name, module in EXPORTS.items():
        obj = getattr(api, name)
        assert getattr(sys.modules[module], name) is obj


@pytest.fixture(scope="module")
def moved_run(tmp_path_factory):
    """A run trained on an image folder, whose folder was then moved away."""
    root = tmp_path_factory.mktemp("moved")
    data = make_folder_dataset(root / "photos", per_class=10)
    cfg = build_config(
        None,
        {
            "data.source": str(data),
            "model.name": "cnn-small",
            "train.epochs": 1,
            "run.out": str(root / "run"),
            "run.report": False,
        },
    )
    from cnnlab import api

    api.train(cfg, progress=False)
    image = root / "query.png"
    shutil.copy(data / "class_1" / "img_004.png", image)
    shutil.move(str(data), str(root / "elsewhere"))
    return root / "run", image, root


def test_a_run_whose_data_moved_away_still_predicts_exports_and_serves(moved_run, tmp_path, monkeypatch, capsys):
    run, image, _ = moved_run
    monkeypatch.chdir(tmp_path)  # another working directory too
    assert main(["predict", str(run), str(image), "--out", "preds.csv"]) == 0
    assert "class_" in Path("preds.csv").read_text()
    assert main(["export", str(run), "--out", "model.onnx"]) == 0
    assert Path("model.onnx").is_file() and "random" in capsys.readouterr().err
    from fastapi.testclient import TestClient

    from cnnlab.workflows.deploy.serve import create_app, load_served

    with TestClient(create_app(load_served(str(run))), base_url="http://localhost") as client:
        r = client.post("/predict", content=image.read_bytes(), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.json()["top_k"][0]["label"].startswith("class_"), r.json()


def test_predicting_from_a_run_loads_no_training_code_and_no_plotting(moved_run):
    run, image, root = moved_run
    code = (
        "import sys\n"
        "from cnnlab.inference.load import load_model\n"
        f"p = load_model({str(run)!r}, 'cpu')\n"
        f"out = p.predict([{str(image)!r}])\n"
        "assert out[0]['top'], out\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'jinja2')\n"
        "             or m.startswith(('cnnlab.train', 'cnnlab.workflows', 'cnnlab.reports')))\n"
        "print('LOADED', bad)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED []" in out.stdout, out.stdout


def _private_imports() -> list[str]:
    """``from cnnlab.x import _name`` anywhere in src, and ``module._name`` on a cnnlab module imported
    by name (dunder names such as ``__version__`` are public)."""
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cnnlab"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.append(f"{module}:{node.lineno} imports {node.module}.{a.name}")
                    elif f"{node.module}.{a.name}" in MODULES:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("cnnlab"):
                        aliases[a.asname or a.name] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return found


def test_no_private_name_is_used_across_modules():
    found = _private_imports()
    assert not found, "private names used outside their module (make them public or move the code): " + "; ".join(found)


STATE_FILES = {"study.json", "cv.json", "seeds.json", "sweep.json"}
READERS = {"loads", "load", "read_json", "json_object", "read_text", "read_bytes", "safe_load", "open",
           "model_validate"}  # fmt: skip


def _state_reads() -> list[str]:
    """Calls that read a workflow's state file (by its name, or a group's ``state_path``) anywhere but
    in ``runs/group.py``, whose typed ``RunGroup.load`` and ``read_sweep_summary`` are the only door."""
    found = []
    for module, path in _modules().items():
        if module == "cnnlab.runs.group":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if fn not in READERS:
                continue
            inside = [n for part in [node.func, *node.args] for n in ast.walk(part)]
            if any(isinstance(n, ast.Constant) and n.value in STATE_FILES for n in inside) or any(
                isinstance(n, ast.Attribute) and n.attr == "state_path" for n in inside
            ):
                found.append(f"{module}:{node.lineno}")
    return sorted(set(found))


def test_no_workflow_state_is_read_but_through_its_model():
    """Issue 44: study.json, cv.json, seeds.json and sweep.json are read only as their typed models
    (``cnnlab.core.state`` / ``cnnlab.core.study``), so no code reads a state by string key; the type
    checker refuses indexing a model."""
    assert _state_reads() == []
    # the check finds such a read
    planted = SRC / "workflows" / "_planted_state_read.py"
    planted.write_text('import json\nfrom pathlib import Path\n\nX = json.loads((Path(".") / "cv.json").read_text())\n')
    try:
        assert _state_reads() == ["cnnlab.workflows._planted_state_read:4"]
    finally:
        planted.unlink()
