"""PyInstaller entry point of the headless CLI (the installed console script is engine.cli.main:main)."""

import sys

from engine.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
