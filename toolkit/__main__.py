"""``python -m toolkit`` is the ``selfsup`` command (and what ``torchrun -m toolkit`` runs)."""

import sys

from toolkit.cli import main

sys.exit(main())
