"""spark-submit entry point: `custseg models` (arguments as for the CLI, without the stage)."""

import sys

from custseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["models", *sys.argv[1:]]))
