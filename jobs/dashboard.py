"""spark-submit entry point: `custseg dashboard` (arguments as for the CLI, without the stage)."""

import sys

from custseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["dashboard", *sys.argv[1:]]))
