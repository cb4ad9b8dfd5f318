"""`python -m cnnlab.cli.sweep_worker DIR --index I`: one worker process of `cnnlab sweep --workers N`
(started by it; the study's storage URL, if any, comes in $CNNLAB_SWEEP_STORAGE)."""

import argparse
import signal
import sys

from cnnlab.cli.main import Terminated, on_sigterm, setup_logging
from cnnlab.core.errors import CnnlabError
from cnnlab.workflows.sweep.runner import worker_main

parser = argparse.ArgumentParser(prog="python -m cnnlab.cli.sweep_worker", description=__doc__)
parser.add_argument("sweep", metavar="DIR")
parser.add_argument("--index", type=int, default=0)
args = parser.parse_args()
setup_logging(False)
signal.signal(signal.SIGTERM, on_sigterm)
try:
    worker_main(args.sweep, args.index)
except CnnlabError as e:
    print(f"cnnlab sweep worker {args.index}: error: {e}", file=sys.stderr)
    sys.exit(2)
except Terminated:
    sys.exit(143)
except KeyboardInterrupt:
    sys.exit(130)
