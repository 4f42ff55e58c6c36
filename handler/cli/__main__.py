"""``python -m handler.cli``: the same command line as ``obs-workflow-restore``."""

import sys

from handler.cli import main

sys.exit(main())
