"""``python -m handler.devtools.emulator``: see :mod:`handler.devtools.emulator.cli`."""

import sys

from handler.devtools.emulator.cli import main

sys.exit(main())
