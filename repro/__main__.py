"""``python -m repro``: the ``repro`` command line (what ``torchrun -m repro run SUITE``
starts in every process)."""

import sys

from repro.cli.main import main

sys.exit(main())
