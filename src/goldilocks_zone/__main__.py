"""``python -m goldilocks_zone`` is the ``goldilocks`` command."""

import sys

from goldilocks_zone.cli import main

sys.exit(main())
