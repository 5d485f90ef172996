"""spark-submit entry point: `custseg drift` (arguments as for the CLI, without the stage)."""

import sys

from custseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["drift", *sys.argv[1:]]))
