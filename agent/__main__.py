"""``python -m agent COMMAND`` (same as ``python agent.py COMMAND`` minus ``demo``)."""

import sys

from agent.cli import main

sys.exit(main())
