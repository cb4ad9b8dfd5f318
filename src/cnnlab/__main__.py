"""`python -m cnnlab` runs the CLI."""

import sys

from cnnlab.cli import main

sys.exit(main())
