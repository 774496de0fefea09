"""`python -m bench`: see bench.app."""

import sys

from bench.app import main

if __name__ == "__main__":
    sys.exit(main())
