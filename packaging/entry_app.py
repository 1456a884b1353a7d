"""PyInstaller entry point of the GUI (the installed console script is neurolens_app.main:main)."""

import sys

from neurolens_app.main import main

if __name__ == "__main__":
    sys.exit(main())
