"""`tuneterm run`, `replay`, `layers`: the engine in the foreground, no daemon."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tuneterm.cli.common import add_train_flags, finish, print_json, print_table, workspace_of
from tuneterm.errors import ExitCode, UserError


def register(sub) -> None:
    p = sub.add_parser("run", help="train a session in the foreground; prints the run directory",
                       description="Train a session in the foreground (no daemon): a progress bar on "
                       "stderr, the run directory on stdout at the end. The session is first checked as "
                       "`validate` checks it; one that cannot train (or whose data, model or device fails "
                       "at setup) exits 2 with one line and leaves no run directory. Ctrl-C checkpoints "
                       "and stops; `--resume RUN_DIR` continues from the newest intact checkpoint.")
    p.add_argument("session", nargs="?", help="session file (.toml)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint")
    p.add_argument("--control", metavar="PATH",
                   help="read live control messages (JSON lines) from a file or FIFO ('-': stdin)")
    add_train_flags(p)
    _processes_flag(p)
    finish(p, cmd_run)

    p = sub.add_parser("replay", help="re-run a run or session file with its recorded edits",
                       description="Re-run a finished run (or a session file) applying every recorded edit "
                       "at its step. With --check, compare the metrics with the original run's and exit 1 "
                       "naming the first step that differs.")
    p.add_argument("target", help="run directory / run id, or a session file")
    p.add_argument("--check", action="store_true", help="compare with the original run's metrics")
    add_train_flags(p)
    _processes_flag(p)
    finish(p, cmd_replay)

    p = sub.add_parser("layers", help="the freezable layer groups of a session's model",
                       description="List the layer groups (the units of freezing) of the session's model "
                       "with parameter counts, and which the session freezes (a run directory: as its "
                       "edit log left them).")
    p.add_argument("session", help="session file (.toml) or a run directory")
    finish(p, cmd_layers)


REL_TOL_ACROSS_PROCESSES = 1e-4


def _processes_flag(p) -> None:
    p.add_argument("--processes", type=int, metavar="N",
                   help="train on N processes (torch.distributed; overrides [distributed] processes)")


def _load(path: str, ws: Path):
    from tuneterm.session.io import load_session

    from tuneterm.rundir import RunDir

    p = Path(path)
    return load_session(RunDir(p).session if p.is_dir() else p, ws)


def _apply_flags(session, args, ws: Path):
    """The session with the command line's overrides, checked again as a whole before any
    run directory exists (an override can make a valid file invalid)."""
    from tuneterm.session.io import check_session_text, dumps_session

    flags = []
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise UserError(f"--max-steps: {args.max_steps} must be at least 1")
        session.hyperparameters.max_steps = args.max_steps
        flags.append(f"--max-steps {args.max_steps}")
    if args.kernels:
        session.runtime.kernels = args.kernels
    if args.device:
        session.runtime.device = args.device
    if getattr(args, "processes", None) is not None:
        session.distributed.processes = args.processes
        flags.append(f"--processes {args.processes}")
    if not flags:
        return session
    checked, problems = check_session_text(dumps_session(session), " ".join(flags), ws)
    if problems:
        p = problems[0]
        raise UserError(f"{p.file}: {p.field}: {p.message}")
    checked.edits = session.edits
    return checked


def _check(session, ws: Path):
    """The checks `validate` makes with the model (session_verbs.engine_problems), before
    any run directory exists: a session that cannot train is refused, exit 2."""
    from tuneterm.cli.session_verbs import engine_problems
    from tuneterm.session import SessionError

    problems = engine_problems(session, ws)
    if problems:
        raise SessionError(problems)
    return session


class _Started:
    """A sink that notes the end of setup (the start or resume event) and only then names
    the run on stderr: a run whose setup fails prints one line, the error. It also says
    which damaged checkpoints a resume skipped."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.started = False

    def event(self, row: dict) -> None:
        if row.get("kind") == "checkpoint_skipped":
            sys.stderr.write(f"checkpoint {row.get('checkpoint')} skipped: {row.get('reason')} "
                             f"(moved to {row.get('moved_to')})\n")
        if not self.started and row.get("kind") in ("start", "resume"):
            self.started = True
            sys.stderr.write(f"run: {self.run_dir}\n")

    def metric(self, row: dict) -> None:
        pass

    def reply(self, msg: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _discard(run_dir: Path) -> None:
    """Remove a run directory whose setup failed: first renamed out of sight (a hidden
    name that no listing shows), then deleted."""
    import logging
    import shutil

    for h in list(logging.getLogger().handlers):  # log.txt is open in it
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).parent == run_dir:
            logging.getLogger().removeHandler(h)
            h.close()
    gone = run_dir.with_name(f".discarded-{run_dir.name}")
    try:
        run_dir.rename(gone)
    except OSError:
        gone = run_dir
    shutil.rmtree(gone, ignore_errors=True)


def _train(run_dir: Path, ws: Path, args, *, resume: bool = False, control: str | None = None,
           replay_of: Path | None = None) -> int:
    """Train ``run_dir``. A fresh run (not ``resume``) whose setup fails — bad data, no
    CUDA, a model that does not load — leaves no run directory behind: exit 2, one line."""
    from tuneterm.engine.control import Mailbox
    from tuneterm.engine.progress import Progress
    from tuneterm.engine.metrics import summary
    from tuneterm.engine.runs import setup_logging, train_run
    from tuneterm.errors import TrainingError, TunetermError

    setup_logging(run_dir, to_stderr=False)
    mailbox = Mailbox()
    if control:
        mailbox.read_path(control)
    import signal

    def on_int(signum, frame):  # noqa: ARG001
        mailbox.put({"type": "pause", "id": "ctrl-c"})
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C aborts

    signal.signal(signal.SIGINT, on_int)
    signal.signal(signal.SIGTERM, on_int)
    started = _Started(run_dir)
    try:
        if _processes(run_dir, ws, args) > 1:
            code, state = _train_group(run_dir, ws, args, resume, control, replay_of, started)
        else:
            code, state = train_run(run_dir, ws, sinks=[started, Progress()], mailbox=mailbox, resume=resume,
                                    replay_of=replay_of)
    except TrainingError as e:
        sys.stderr.write(f"tuneterm: training failed: {e}\n")
        print(run_dir)
        return ExitCode.FAILED
    except Exception as e:
        if started.started:
            raise
        if not resume:
            _discard(run_dir)
        if isinstance(e, TunetermError):
            raise
        raise UserError(f"setup failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    info = summary(run_dir)
    info["state"] = state
    if getattr(args, "json", False):
        print_json(info)
    else:
        parts = [f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items() if k != "run_dir"]
        sys.stderr.write("summary: " + " ".join(parts) + "\n")
        if code == ExitCode.PAUSED:
            sys.stderr.write(f"paused; continue with: tuneterm run --resume {run_dir}\n")
        print(run_dir)
    return 128 + signal.SIGINT if code == ExitCode.PAUSED else code  # paused by Ctrl-C: the shell's code for it


def _processes(run_dir: Path, ws: Path, args) -> int:
    if getattr(args, "processes", None):
        return args.processes
    return _load(str(run_dir), ws).distributed.processes


def _follow_group(proc, paths, started) -> str:
    """Rank 0's rows drawn as one process's run draws them (the run's name once it started,
    the progress line, a line per evaluation and edit) while the group trains; returns the
    group's stderr."""
    import threading
    import time

    from tuneterm.engine.progress import Progress
    from tuneterm.files import JsonlTail, parse_rows

    progress, since = Progress(), time.time() - 1.0  # rows a resume keeps were shown by their attempt
    def on_event(row: dict) -> None:
        started.event(row)
        progress.event(row)

    tails = [(JsonlTail(paths.metrics), progress.metric), (JsonlTail(paths.events), on_event)]
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stderr.read()), daemon=True)
    reader.start()

    def follow() -> None:
        for tail, sink in tails:
            for _, row in parse_rows(tail.read_new()[1]):
                if isinstance(row, dict) and row.get("time", since) >= since and row.get("kind"):
                    sink(row)

    while proc.poll() is None:
        follow()
        time.sleep(0.2)
    reader.join()
    follow()
    progress.close()
    return "".join(chunks)


def _keep_group_output(run_dir: Path, err: str) -> Path | None:
    """The group's stderr (every rank's traceback, the agent's report) appended to the run's
    worker.stderr, as the daemon's executor keeps a worker's, so a lost rank's reason is not
    lost with it; None when there was none."""
    from tuneterm.rundir import RunDir

    if not err.strip():
        return None
    path = RunDir(run_dir).worker_stderr
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(err if err.endswith("\n") else err + "\n")
    return path


def _train_group(run_dir: Path, ws: Path, args, resume: bool, control, replay_of, started) -> tuple[int, str]:
    """Train on several processes: the worker, as torch.distributed's elastic agent, starts
    the ranks (engine/launch.py); rank 0 writes the run directory as one process would.
    Returns (exit code, end state)."""
    import signal
    import subprocess

    from tuneterm import rundir
    from tuneterm.engine.launch import EXIT_GROUP_LOST
    from tuneterm.errors import TrainingError
    from tuneterm.states import RunEnd

    argv = [sys.executable, "-m", "tuneterm.engine.worker", str(run_dir), "--workspace", str(ws), "--no-protocol",
            "--processes", str(_processes(run_dir, ws, args))]
    argv += ["--resume"] if resume else []
    argv += ["--control", str(Path(control).resolve()) if control != "-" else "-"] if control else []
    argv += ["--replay-of", str(replay_of)] if replay_of else []
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL if control != "-" else None,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Ctrl-C reaches the whole process group (rank 0 pauses); a TERM to us is passed on as one.
    interrupted: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(1))
    err = _follow_group(proc, rundir.RunDir(run_dir), started)
    ends = [r for r in rundir.read_jsonl(rundir.RunDir(run_dir).events) if r.get("kind") in ("start", "resume", "end")]
    if any(r["kind"] in ("start", "resume") for r in ends) and not started.started:
        started.started = True
        sys.stderr.write(f"run: {run_dir}\n")
    state = ends[-1].get("state", RunEnd.FAILED) if ends and ends[-1]["kind"] == "end" else RunEnd.FAILED
    code = proc.returncode
    if code in (ExitCode.OK, ExitCode.PAUSED):
        return code, state
    if interrupted and not started.started:
        # Ctrl-C before rank 0 could hold it (a rank still starting its interpreter): nothing
        # trained, so as on one process, no run is left behind — a resume starts it again.
        if not resume:
            _discard(run_dir)
        raise KeyboardInterrupt
    last = next((ln for ln in reversed(err.splitlines()) if ln.startswith("tuneterm-worker:")), "")
    if code == EXIT_GROUP_LOST or code > 128:
        kept = _keep_group_output(run_dir, err)
        raise TrainingError(f"a rank of the process group was lost (exit code {code}); the run is resumable: "
                            f"tuneterm run --resume {run_dir}" + (f" (the ranks' output: {kept})" if kept else ""))
    if code == ExitCode.BAD_INPUT and not started.started:
        raise UserError(last.split("error: ", 1)[-1] if last else f"setup failed on {run_dir.name}")
    raise TrainingError(last.split("failed: ", 1)[-1] if last else f"the process group ended with code {code}"
                        if code != ExitCode.FAILED else "training failed on a rank")


def cmd_run(args: argparse.Namespace) -> int:
    from tuneterm.workspace import find_run

    ws = workspace_of(args)
    if args.resume:
        if args.session:
            raise UserError("give either a session file or --resume RUN_DIR, not both")
        if args.processes is not None and args.processes < 1:
            raise UserError(f"--processes: {args.processes} must be at least 1")
        if args.max_steps is not None or args.kernels or args.device:
            raise UserError("--resume continues the run as recorded: --max-steps/--kernels/--device don't apply")
        run_dir = find_run(ws, args.resume)
        return _train(run_dir, ws, args, resume=True, control=args.control)
    if not args.session:
        raise UserError("run: give a session file (or --resume RUN_DIR)")
    from tuneterm.engine.runs import create_run

    session = _check(_apply_flags(_load(args.session, ws), args, ws), ws)
    run_dir = create_run(ws, session)
    return _train(run_dir, ws, args, control=args.control)


def cmd_replay(args: argparse.Namespace) -> int:
    from tuneterm.engine.runs import create_run
    from tuneterm.rundir import RunDir, compare_metrics, read_jsonl
    from tuneterm.workspace import find_run

    ws = workspace_of(args)
    target = Path(args.target)
    original = None
    if target.suffix == ".toml" and target.is_file():
        session = _load(str(target), ws)
    else:
        original = find_run(ws, args.target)
        session = _load(str(original), ws)
    if args.check and original is None:
        raise UserError("replay --check needs a run directory to compare with (got a session file)")
    session = _check(_apply_flags(session, args, ws), ws)
    run_dir = create_run(ws, session)
    code = _train(run_dir, ws, args, replay_of=original)
    if code != 0 or not args.check:
        return code
    replayed = read_jsonl(RunDir(run_dir).metrics)
    # Another process count sums in another order: equal within 1e-4, not bit for bit.
    counts = (_load(str(original), ws).distributed.processes, _processes(run_dir, ws, args))
    tol = REL_TOL_ACROSS_PROCESSES if counts[0] != counts[1] else 0.0
    cmp = compare_metrics(read_jsonl(RunDir(original).metrics), replayed, tol)
    across = f" ({counts[0]} vs {counts[1]} processes: compared within {tol:g} relative)" if tol else ""
    if not cmp.match:
        sys.stderr.write(f"replay differs from {original.name} at {cmp.detail}{across}\n")
        return ExitCode.FAILED
    what = f"equal within {tol:g} relative{across}" if tol else "identical"
    sys.stderr.write(f"replay matches {original.name}: {len(replayed)} metric rows {what}\n")
    return ExitCode.OK


def cmd_layers(args: argparse.Namespace) -> int:
    from tuneterm.engine.layer_report import layer_report, trains

    ws = workspace_of(args)
    if Path(args.session).is_dir():  # a run: its settings as its edit log left them
        from tuneterm.session.io import run_session

        session = run_session(Path(args.session), ws)
    else:
        session = _load(args.session, ws)
    report = layer_report(session, ws)
    rows, total, trainable = report["layers"], report["total_params"], report["trainable_params"]
    if args.json:
        print_json(report)
        return ExitCode.OK
    if report["lora"]:
        print_table([{"layer": r["name"], "adapter": f"{r['adapter_params']:,}", "base": f"{r['base_params']:,}",
                      "trains": trains(r), "tied": ",".join(r.get("tied", []))} for r in rows],
                    ["layer", "adapter", "base", "trains", "tied"])
    else:
        print_table([{"layer": r["name"], "params": f"{r['params']:,}", "frozen": "yes" if r["frozen"] else "",
                      "trains": trains(r), "tied": ",".join(r.get("tied", []))} for r in rows],
                    ["layer", "params", "frozen", "trains", "tied"])
    print(f"trainable: {trainable:,} of {total:,} parameters ({100 * trainable / max(1, total):.1f}%)")
    if report["tied"]:
        print(report["tied"])
    return ExitCode.OK
