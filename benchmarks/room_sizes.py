"""How the rooms of cnnlab's source measure up: functions over 60 lines, files over 400 lines,
functions over McCabe 10 (ruff's C901), functions with more than 5 parameters, and the counts of
``Any`` and ``dict[str, Any]`` in annotations. Run it on this tree or on another checkout to compare:

    python benchmarks/room_sizes.py [SRC_DIR]      # default: src/cnnlab of this repository
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path


def measure(src: Path) -> dict[str, int]:
    long_functions = big_files = many_params = any_count = dict_any = 0
    for path in sorted(src.rglob("*.py")):
        text = path.read_text()
        big_files += len(text.splitlines()) > 400
        any_count += len(re.findall(r"\bAny\b", text)) - len(re.findall(r"import[^\n]*\bAny\b", text))
        dict_any += len(re.findall(r"dict\[str, Any\]", text))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                long_functions += node.end_lineno - node.lineno + 1 > 60
                a = node.args
                names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
                many_params += len(names) > 5
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(src), "--select", "C901", "--output-format", "json",
         "--config", "lint.mccabe.max-complexity=10", "--exit-zero", "--no-cache", "--isolated"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {
        "functions > 60 lines": long_functions,
        "files > 400 lines": big_files,
        "McCabe > 10": len(json.loads(out.stdout)),
        "parameters > 5": many_params,
        "Any": any_count,
        "dict[str, Any]": dict_any,
    }


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "src" / "cnnlab"
    for name, value in measure(src).items():
        print(f"{name:<22} {value:>5}")


if __name__ == "__main__":
    main()
