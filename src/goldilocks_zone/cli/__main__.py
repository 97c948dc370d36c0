import sys

from goldilocks_zone.cli.main import main

sys.exit(main())
