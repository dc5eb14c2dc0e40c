"""The worker process: it holds its run's lock once, for its whole life (no moment between
its own check and training where a second worker could take the run); library warnings go
to the run's log.txt, not to its stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tiny_sessions import tiny_session_toml

# train_run replaced by a probe: is the run's lock still held when training would start?
PROBE = """\
import fcntl, os, sys
from tuneterm.engine import runs, worker

def probe(run_dir, workspace, **kw):
    fd = os.open(os.path.join(run_dir, ".lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        print("free")
    except BlockingIOError:
        print("held")
    return 0, "done"

runs.train_run = probe
sys.exit(worker.main(sys.argv[1:]))
"""


def test_the_worker_holds_the_run_lock_from_its_check_into_training(workspace):
    rd = workspace / "runs" / "locked"
    rd.mkdir()
    (rd / "session.toml").write_text(tiny_session_toml("locked", steps=2))
    p = subprocess.run([sys.executable, "-c", PROBE, str(rd)], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert (p.returncode, p.stdout) == (0, "held\n"), p.stderr
