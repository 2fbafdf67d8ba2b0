"""What every job script shares: logging set-up and the one-line error contract for bad input."""
from __future__ import annotations

import logging
import sys

from .config import ConfigError
from .errors import Interrupted, SweepError


def main(fn, argv=None) -> None:
    """Run fn(argv); bad input becomes one line on stderr and exit code 2, a failed sweep exit code 1, Ctrl-C
    one line and 130."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        fn(argv)
    except ConfigError as e:
        print(f"lmc-ray: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        print(f"lmc-ray: {e}", file=sys.stderr)
        sys.exit(130)
    except SweepError as e:
        print(f"lmc-ray: sweep failed: {e} (rerun the same command to resume)", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # before the store was opened: nothing was written
        print("lmc-ray: interrupted before any result was stored", file=sys.stderr)
        sys.exit(130)
