"""`python -m bench.nightly`: bench.ops.nightly's command (the command users run stays)."""

import sys

from bench.ops.nightly import main

if __name__ == "__main__":
    sys.exit(main())
