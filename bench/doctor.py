"""`python -m bench.doctor`: bench.ops.doctor's command (the command users run stays)."""

import sys

from bench.ops.doctor import main

if __name__ == "__main__":
    sys.exit(main())
