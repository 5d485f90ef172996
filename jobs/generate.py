"""spark-submit entry point: `custseg generate` (arguments as for the CLI, without the stage)."""

import sys

from custseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
