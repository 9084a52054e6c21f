"""``python -m spargo``: the same command as the ``spargo`` console script."""

from __future__ import annotations

import sys

from spargo.cli import main

if __name__ == "__main__":
    sys.exit(main())
