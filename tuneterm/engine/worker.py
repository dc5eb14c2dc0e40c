"""The worker process: trains one run directory for the runner (docs/architecture.md).

    python -m tuneterm.engine.worker RUN_DIR [--resume] [--kernels K] [--device D] [--processes N]

Control messages on stdin, protocol messages on stdout, a human log on stderr and in
RUN_DIR/log.txt. SIGTERM/SIGINT pause (checkpoint, exit 75); SIGUSR1 checkpoints.

A session of ``[distributed] processes`` > 1 (or ``--processes``): this process becomes
torch.distributed's elastic agent (engine/launch.py) and runs this module on each rank.
Rank 0 is the worker described above; the other ranks read nothing and write nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path


# A stop (SIGTERM, SIGINT) that arrives while a process starts up — importing torch, loading
# the model, seconds — is held here and becomes a pause at the first step boundary (a
# checkpoint at step 0, exit 75), as one arriving later does: dying of it mid-start read as a
# crash (143), and a rank that died so left the other ranks waiting on it for a minute.
EARLY_STOPS: list[int] = []
PAUSE_AT_START_ENV = "TUNETERM_PAUSE_AT_START"  # the agent was stopped before its ranks started


def hold_stop_signals() -> None:
    """From a process's first lines: SIGTERM and SIGINT are held in EARLY_STOPS."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: EARLY_STOPS.append(signum))


def main(argv: list[str] | None = None) -> int:
    if os.environ.get("RANK", "0") == "0":  # the worker, an agent, rank 0 (the others ignore stops)
        hold_stop_signals()
    ap = argparse.ArgumentParser(prog="tuneterm-worker")
    ap.add_argument("run_dir")
    ap.add_argument("--workspace", help="default: the run directory's grandparent")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--kernels", choices=("auto", "triton", "torch"))
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--processes", type=int, help="ranks (default: the session's [distributed] processes)")
    ap.add_argument("--control", help="read control messages from this file or FIFO, not stdin")
    ap.add_argument("--replay-of", help="the run this one replays")
    ap.add_argument("--no-protocol", action="store_true", help="no protocol messages on stdout (tuneterm run)")
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
    from tuneterm.engine import launch
    from tuneterm.engine.strategy import GroupLost, world_from_env

    if world_from_env() == 1:
        processes = args.processes or _session_processes(run_dir, workspace)
        if processes > 1:  # this process is the agent; the ranks run this module again
            # The elastic agent's own handlers take over (it passes a stop on to the ranks);
            # one held already reaches rank 0 as a pause at its first boundary.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if EARLY_STOPS:
                os.environ[PAUSE_AT_START_ENV] = "1"
            return launch.run_group(processes, run_dir, _rank_args(run_dir, workspace, args))
    elif os.environ.get("RANK", "0") != "0":
        return _follower(run_dir, workspace, args)
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
    for signum in EARLY_STOPS + ([signal.SIGTERM] if os.environ.pop(PAUSE_AT_START_ENV, None) else []):
        on_pause(signum, None)
    if args.control:
        mailbox.read_path(args.control)
    else:
        mailbox.read_stream(sys.stdin)
    code = ExitCode.FAILED
    try:
        code, _ = train_run(run_dir, workspace, sinks=[] if args.no_protocol else [out], mailbox=mailbox,
                            resume=args.resume, kernels=args.kernels, device=args.device, lock=lock,
                            replay_of=Path(args.replay_of) if args.replay_of else None)
    except RunLocked as e:
        sys.stderr.write(f"tuneterm-worker: {e}\n")
        code = ExitCode.LOCKED
    except UserError as e:
        sys.stderr.write(f"tuneterm-worker: error: {e}\n")
        code = ExitCode.BAD_INPUT
    except TrainingError as e:
        sys.stderr.write(f"tuneterm-worker: training failed: {e}\n")
        code = launch.EXIT_GROUP_LOST if isinstance(e.__cause__, GroupLost) else ExitCode.FAILED
    finally:
        launch.write_exit_code(code)
    return launch.rank_exit_code(code)


def _rank_args(run_dir: Path, workspace: Path, args) -> list[str]:
    """This command line for each rank (without --processes: a rank is one process)."""
    out = [str(run_dir), "--workspace", str(workspace)]
    for flag in ("kernels", "device", "control", "replay_of"):
        if getattr(args, flag):
            out += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return out + [f for f, on in (("--resume", args.resume), ("--no-protocol", args.no_protocol)) if on]


def _session_processes(run_dir: Path, workspace: Path) -> int:
    from tuneterm.rundir import RunDir
    from tuneterm.session.io import load_session

    try:
        return load_session(RunDir(run_dir).session, workspace).distributed.processes
    except Exception:  # a session that does not load is reported by train_run, as ever
        return 1


def _follower(run_dir: Path, workspace: Path, args) -> int:
    """A rank other than 0: it trains what rank 0 broadcasts and writes nothing; signals
    are rank 0's to act on (a pause reaches this rank at the next step boundary)."""
    import logging

    from tuneterm.engine import launch
    from tuneterm.engine.runs import train_run
    from tuneterm.errors import ExitCode, TrainingError, UserError

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    try:
        return launch.rank_exit_code(train_run(run_dir, workspace, sinks=[], resume=args.resume, kernels=args.kernels,
                                               device=args.device, replay_of=Path(args.replay_of) if args.replay_of
                                               else None)[0])
    except UserError:
        return ExitCode.BAD_INPUT
    except TrainingError:
        return ExitCode.FAILED


if __name__ == "__main__":
    sys.exit(main())
