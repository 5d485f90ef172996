"""spark-submit entry point: `custseg audiences` (arguments as for the CLI, without the stage)."""

import sys

from custseg.cli import main

if __name__ == "__main__":
    sys.exit(main(["audiences", *sys.argv[1:]]))
