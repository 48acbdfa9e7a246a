"""Lets `python -m agent` behave exactly like the `sts-agent` script."""

import sys

from agent.cli import main

sys.exit(main())
