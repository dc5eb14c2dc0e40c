"""Start one session on N processes with torch.distributed's elastic agent (torchrun's,
used as a library): this process becomes the agent, the ranks are workers
(``python -m tuneterm.engine.rank RUN_DIR ...``, the worker under another name) in one local group.

The agent owns the rendezvous and the group's life: when a rank dies (kill -9, the
OOM-killer) it stops the others, and the ranks' collectives time out meanwhile
(strategy.TIMEOUT_ENV), so no rank is left hanging. Rank 0 — the leader — writes its exit
code to a file before it exits; the agent's own result is the fallback when rank 0 never
got to write it (a rank killed by a signal: 128 + the signal, a crash the daemon retries).
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

from tuneterm.errors import ExitCode

EXIT_FILE_ENV = "TUNETERM_EXIT_FILE"  # where rank 0 writes the session's exit code
# Rank 0's code when another rank vanished mid-collective: not a training failure, not a
# pause, so the runner counts the attempt as a crash and resumes it.
EXIT_GROUP_LOST = int(ExitCode.GROUP_LOST)


def run_group(processes: int, run_dir: Path, worker_args: list[str]) -> int:
    """Run the worker on ``processes`` ranks; the session's exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    exit_file = run_dir / f".exit-{os.getpid()}"
    exit_file.unlink(missing_ok=True)
    os.environ[EXIT_FILE_ENV] = str(exit_file)
    # One thread a rank unless the session says otherwise (torchrun's default as well).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=f"tuneterm-{uuid.uuid4().hex}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2,
                          shutdown_timeout=60)
    codes: dict[int, int] = {}
    stopped_by = 0
    try:
        elastic_launch(config, sys.executable)("-m", "tuneterm.engine.rank", *worker_args)
    except ChildFailedError as e:
        codes = {f.local_rank: f.exitcode for f in e.failures.values()}
    except SignalException as e:  # the agent was told to stop: the ranks were told too
        stopped_by = int(e.sigval)
    try:
        written = int(exit_file.read_text().strip())
    except (OSError, ValueError):
        written = None
    finally:
        exit_file.unlink(missing_ok=True)
    return group_code(codes, written, stopped_by)


def group_code(codes: dict[int, int], written: int | None, stopped_by: int = 0) -> int:
    """The session's exit code from how the group ended: ``codes`` the agent's failures
    (local rank: exit status, negative for a signal), ``written`` what rank 0 wrote before
    it exited (None: it never got to), ``stopped_by`` the signal that stopped the agent.

    Rank 0 writes OK or PAUSED only after the last checkpoint's barrier, which every rank
    passed: the run is whole, whatever happened to a rank afterwards (the agent SIGTERMs the
    ranks still closing down when one exits non-zero, and a Python process in its
    finalisation dies of it). Otherwise a rank killed by a signal makes the attempt a crash
    to resume (128 + the signal), whatever rank 0 wrote; then rank 0's code; then the agent's
    view."""
    if written in (ExitCode.OK, ExitCode.PAUSED):
        return int(written)
    killed = next((-c for c in codes.values() if c < 0), 0)
    if killed:
        return 128 + killed
    if written is not None:
        return written
    if stopped_by:
        return 128 + stopped_by
    return codes.get(0, next(iter(codes.values()), int(ExitCode.FAILED))) if codes else int(ExitCode.FAILED)


def write_exit_code(code: int) -> None:
    """Rank 0: the session's exit code for the agent (no-op outside a group)."""
    path = os.environ.get(EXIT_FILE_ENV)
    if path:
        Path(path).write_text(f"{int(code)}\n")


def rank_exit_code(code: int) -> int:
    """What a rank exits with. Under the elastic agent, a rank that ended as planned (done,
    paused: every rank passed the last checkpoint's barrier) exits 0 and the session's code
    travels in the exit file: the agent reads any other status as the group failing and
    SIGTERMs/SIGKILLs the ranks still closing down, which run_group would then count as a
    rank killed (a crash) although the run paused or finished. Outside an agent (one
    process, Ray's ranks) the code itself."""
    if os.environ.get(EXIT_FILE_ENV) and int(code) in (ExitCode.OK, ExitCode.PAUSED):
        return int(ExitCode.OK)
    return int(code)
