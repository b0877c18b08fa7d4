"""``python -m beamscope.cli``: the ``beamscope`` command."""

import sys

from beamscope.cli import main

sys.exit(main())
