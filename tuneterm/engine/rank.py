"""One rank of a multi-process session (started by engine/launch.py's elastic agent):
the worker's own code, under another module name so that nothing that looks for a run's
worker by its command line (the daemon re-adopting workers) mistakes a rank for it."""

import sys

from tuneterm.engine.worker import main

if __name__ == "__main__":
    sys.exit(main())
