"""spark-submit entry point: `custseg segment` (arguments as for the CLI, without the stage)."""

import sys

from custseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["segment", *sys.argv[1:]]))
