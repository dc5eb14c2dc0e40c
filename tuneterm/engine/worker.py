"""The worker process: trains one run directory for the runner (docs/architecture.md).

    python -m tuneterm.engine.worker RUN_DIR [--resume] [--kernels K] [--device D]

Control messages on stdin, protocol messages on stdout, a human log on stderr and in
RUN_DIR/log.txt. SIGTERM/SIGINT pause (checkpoint, exit 75); SIGUSR1 checkpoints.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tuneterm-worker")
    ap.add_argument("run_dir")
    ap.add_argument("--workspace", help="default: the run directory's grandparent")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--kernels", choices=("auto", "triton", "torch"))
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from tuneterm.engine.control import Mailbox, StdoutProtocol
    from tuneterm.engine.runs import RunLock, RunLocked, setup_logging, train_run
    from tuneterm.errors import ExitCode, TrainingError, UserError
    from tuneterm.rundir import RunDir

    run_dir = Path(args.run_dir).resolve()
    workspace = Path(args.workspace).resolve() if args.workspace else run_dir.parent.parent
    if not RunDir(run_dir).session.is_file():
        sys.stderr.write(f"tuneterm-worker: {run_dir}: no {RunDir(run_dir).session.name}\n")
        return ExitCode.BAD_INPUT
    # Taken once and held until the process ends (train_run gets it): never a moment in
    # which a second worker could pass this check too.
    lock = RunLock(run_dir)
    if not lock.acquire():
        sys.stderr.write(f"tuneterm-worker: {run_dir.name}: another worker holds the run\n")
        return ExitCode.LOCKED
    setup_logging(run_dir, to_stderr=True)

    mailbox = Mailbox()
    out = StdoutProtocol()

    def on_pause(signum, frame):  # noqa: ARG001
        mailbox.put({"type": "pause", "id": f"signal-{signum}"})

    def on_checkpoint(signum, frame):  # noqa: ARG001
        mailbox.put({"type": "checkpoint", "id": "signal-usr1"})

    signal.signal(signal.SIGTERM, on_pause)
    signal.signal(signal.SIGINT, on_pause)
    signal.signal(signal.SIGUSR1, on_checkpoint)
    mailbox.read_stream(sys.stdin)
    try:
        code, _ = train_run(run_dir, workspace, sinks=[out], mailbox=mailbox, resume=args.resume,
                            kernels=args.kernels, device=args.device, lock=lock)
        return code
    except RunLocked as e:
        sys.stderr.write(f"tuneterm-worker: {e}\n")
        return ExitCode.LOCKED
    except UserError as e:
        sys.stderr.write(f"tuneterm-worker: error: {e}\n")
        return ExitCode.BAD_INPUT
    except TrainingError as e:
        sys.stderr.write(f"tuneterm-worker: training failed: {e}\n")
        return ExitCode.FAILED


if __name__ == "__main__":
    sys.exit(main())
