"""spark-submit entry point: `custseg export` (arguments as for the CLI, without the stage)."""

import sys

from custseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["export", *sys.argv[1:]]))
