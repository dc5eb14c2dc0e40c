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
    fallback, killed = 0, 0
    try:
        elastic_launch(config, sys.executable)("-m", "tuneterm.engine.rank", *worker_args)
    except ChildFailedError as e:
        codes = {f.local_rank: f.exitcode for f in e.failures.values()}
        killed = next((-c for c in codes.values() if c < 0), 0)
        fallback = codes.get(0, next(iter(codes.values()), int(ExitCode.FAILED)))
    except SignalException as e:  # the agent was told to stop: the ranks were told too
        fallback = 128 + int(e.sigval)
    try:
        code = int(exit_file.read_text().strip())
    except (OSError, ValueError):
        code = None
    finally:
        exit_file.unlink(missing_ok=True)
    if killed:  # a rank killed by a signal: a crash (resumable), whatever rank 0 wrote
        return 128 + killed
    return code if code is not None else (fallback or int(ExitCode.FAILED))


def write_exit_code(code: int) -> None:
    """Rank 0: the session's exit code for the agent (no-op outside a group)."""
    path = os.environ.get(EXIT_FILE_ENV)
    if path:
        Path(path).write_text(f"{int(code)}\n")
