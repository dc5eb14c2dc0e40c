"""``python -m tuneterm.runner --workspace WS [--slots N] [--foreground] [--ready-fd FD]``:
the runner daemon's process (detach, workspace lock, socket; see process.py)."""

import sys

from tuneterm.runner.process import main

if __name__ == "__main__":
    sys.exit(main())
