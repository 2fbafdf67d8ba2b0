"""What every job script shares: logging set-up and the one-line error contract for bad input."""
from __future__ import annotations

import logging
import sys

from .config import ConfigError


def main(fn, argv=None) -> None:
    """Run fn(argv); bad input becomes one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        fn(argv)
    except ConfigError as e:
        print(f"lmc-ray: error: {e}", file=sys.stderr)
        sys.exit(2)
