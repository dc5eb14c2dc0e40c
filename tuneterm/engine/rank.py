"""One rank of a multi-process session (started by engine/launch.py's elastic agent):
the worker's own code, under another module name so that nothing that looks for a run's
worker by its command line (the daemon re-adopting workers) mistakes a rank for it."""

import os
import signal
import sys

if __name__ == "__main__":
    # First, before torch is imported: rank 0 holds a stop that arrives while it starts (a
    # pause at its first boundary: worker.EARLY_STOPS); the other ranks never act on one —
    # rank 0's pause reaches them at a step boundary.
    if os.environ.get("RANK", "0") != "0":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
    from tuneterm.engine.worker import main

    sys.exit(main())
