"""`python -m tests.attack [-q] [NAME-FRAGMENT]` (`make attack`): run the attack corpus (the cases
whose name holds the fragment), print the counts and every case that was not clean; exit 1 if any
was not. ``-q``: no line per case."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from tests.attack.corpus import run_all, summary


def main() -> int:
    started = time.time()
    names = [a for a in sys.argv[1:] if a != "-q"]
    with tempfile.TemporaryDirectory(prefix="cnnlab-attack-") as tmp:
        os.environ["CNNLAB_CACHE"] = str(Path(tmp) / "cache")
        outcomes = run_all(Path(tmp), names[0] if names else None, progress="-q" not in sys.argv)
    print(summary(outcomes))
    print(f"({time.time() - started:.0f} s)")
    return 0 if all(o.verdict == "clean" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
