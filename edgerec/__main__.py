"""Allows `python -m edgerec ...`, the same as the `edgerec` console script."""

import sys

from .cli import main

sys.exit(main())
