"""Allows `python -m edgerec ...`, the same as the `edgerec` console script."""

import sys

from edgerec.cli.main import main

sys.exit(main())
