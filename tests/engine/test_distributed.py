"""One session on two CPU processes (gloo, DDP strategy, torch.distributed's elastic
agent): the same run as on one process within 1e-4 at every step, recorded edits applied
once, `replay --check` bit-identical at two processes; the strategy's pieces alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from engine_helpers import rows

sys.path.insert(0, str(Path(__file__).parent.parent / "lm"))
from test_lm_runs import SCRIPT, lm_session  # noqa: E402

from tuneterm.engine import dropout as drop  # noqa: E402
from tuneterm.engine import strategy as S  # noqa: E402


def _cli(workspace: Path, *argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TUNETERM_HOME": str(workspace), "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-m", "tuneterm", *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=workspace)


def _close(a, b, rel=1e-4) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-12)


def test_single_strategy_is_identities():
    s = S.Single()
    assert (s.rank, s.world, s.is_leader) == (0, 1, True)
    assert s.rows(5) == (0, 5) and s.all_sum([1.5, 2.0]) == [1.5, 2.0] and s.broadcast([{"a": 1}]) == [{"a": 1}]


def test_rank_rows_split_in_order():
    class Two(S.DDP):
        def __init__(self, rank):  # no process group: only the arithmetic
            self.rank, self.world = rank, 2

    assert [Two(r).rows(5) for r in (0, 1)] == [(0, 3), (3, 5)]
    assert [Two(r).rows(1) for r in (0, 1)] == [(0, 1), (1, 1)]


@pytest.mark.parametrize("shape,row0", [((4, 3, 5), 1), ((4, 2, 3, 3), 2), ((3, 16), 1)])
def test_unit_dropout_masks_follow_the_row_not_the_rank(shape, row0):
    """Rows [row0:] of a micro-batch get the same mask as in the whole micro-batch, also
    where the slice does not start on a Philox call boundary (3*5 elements a row)."""
    ctx = drop.DropoutContext(seed=11)
    site = drop.site(0.4, 0, ctx, "torch").train()
    x = torch.randn(shape)
    ctx.at(3, 1)
    whole = site(x)
    ctx.at(3, 1, row0)
    part = site(x[row0:])
    assert torch.equal(part, whole[row0:])


def run_on_1_and_2(workspace: Path, session: Path, script: list[dict]) -> tuple[Path, Path]:
    """The session run on 1 process and on 2, under ``script``'s control messages."""
    ctl = workspace / "control.jsonl"
    ctl.write_text("".join(json.dumps({"v": 1, **m}) + "\n" for m in script))
    one = _cli(workspace, "run", str(session), "--control", str(ctl))
    two = _cli(workspace, "run", str(session), "--processes", "2", "--control", str(ctl))
    assert one.returncode == 0, one.stderr[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    return Path(one.stdout.strip()), Path(two.stdout.strip())


def test_two_processes_equal_one_with_edits_and_replay_bit_identical(workspace: Path):
    session = lm_session(workspace, "dist", steps=9)
    d1, d2 = run_on_1_and_2(workspace, session, SCRIPT)
    m1, m2 = rows(d1), rows(d2)
    assert [r["step"] for r in m2 if r["kind"] == "train"] == list(range(1, 10))  # one row per step
    assert [(r["kind"], r["step"]) for r in m1] == [(r["kind"], r["step"]) for r in m2]
    for a, b in zip(m1, m2):
        for k in ("loss", "grad_norm", "val_loss", "lr"):
            if a.get(k) is not None:
                assert _close(a[k], b[k]), (a["kind"], a["step"], k, a[k], b[k])
    edits = [e for e in rows(d2, "events.jsonl") if e["kind"] == "edit"]
    assert len(edits) == len(SCRIPT)  # acknowledged and recorded once, by rank 0
    assert (d2 / "session.toml").read_text().count("[[edits]]") == len(SCRIPT)
    assert "processes = 2" in (d2 / "session.toml").read_text()

    replay = _cli(workspace, "replay", str(d2), "--check")
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert "identical" in replay.stderr
    # A 1-process run replayed on 2: compared within 1e-4, and it says so.
    across = _cli(workspace, "replay", str(d1), "--check", "--processes", "2")
    assert across.returncode == 0, across.stderr[-2000:]
    assert "within 0.0001 relative (1 vs 2 processes" in across.stderr


def _group(run_dir: Path) -> dict[int, str]:
    """The processes of a run's group (the agent and its ranks): pid -> RANK=... | agent."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd, env = (d / "cmdline").read_bytes(), (d / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(run_dir).encode() in cmd and (b"tuneterm.engine.worker" in cmd or b"tuneterm.engine.rank" in cmd):
            rank = [x.decode() for x in env if x.startswith(b"RANK=")]
            out[int(d.name)] = rank[0] if rank else "agent"
    return out


def test_kill9_of_rank1_ends_the_group_and_resume_equals_uninterrupted(workspace: Path):
    import shutil
    import signal
    import time

    from engine_helpers import strip_clock

    session = lm_session(workspace, "kill", steps=9)
    whole = _cli(workspace, "run", str(session), "--processes", "2")
    assert whole.returncode == 0, whole.stderr[-2000:]
    env = {**os.environ, "TUNETERM_HOME": str(workspace), "PYTHONPATH": os.pathsep.join(sys.path)}
    before = {p.name for p in (workspace / "runs").iterdir()}
    proc = subprocess.Popen([sys.executable, "-m", "tuneterm", "run", str(session), "--processes", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    run_dir, deadline = None, time.monotonic() + 300
    while run_dir is None and time.monotonic() < deadline and proc.poll() is None:
        new = [p for p in (workspace / "runs").iterdir() if p.name not in before]
        if new and (new[0] / "checkpoints" / "step-00000002").is_dir():
            run_dir = new[0]
        time.sleep(0.02)
    assert run_dir is not None and proc.poll() is None, "the run ended before it could be killed"
    rank1 = [pid for pid, r in _group(run_dir).items() if r == "RANK=1"]
    assert rank1, _group(run_dir)
    os.kill(rank1[0], signal.SIGKILL)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert time.monotonic() - t0 < 30, "the group outlived its rank by more than 30 s"
    assert proc.returncode == 1 and "resumable" in err, err[-2000:]
    # what the ranks printed is kept in the run directory and named, not lost with the rank
    kept = run_dir / "worker.stderr"
    assert str(kept) in err and "local_rank" in kept.read_text(), err[-2000:]
    time.sleep(0.5)
    assert _group(run_dir) == {}, "orphan processes"  # the agent and every rank are gone

    other = run_dir.with_name(run_dir.name + "-on1")
    shutil.copytree(run_dir, other)
    again = _cli(workspace, "run", "--resume", str(run_dir))
    assert again.returncode == 0, again.stderr[-2000:]
    want = rows(Path(whole.stdout.strip()))
    assert strip_clock(rows(run_dir)) == strip_clock(want)  # same process count: bit-identical

    on1 = _cli(workspace, "run", "--resume", str(other), "--processes", "1")
    assert on1.returncode == 0, on1.stderr[-2000:]
    got = rows(other)
    assert [(r["kind"], r["step"]) for r in got] == [(r["kind"], r["step"]) for r in want]
    for a, b in zip(got, want):
        for k in ("loss", "grad_norm", "val_loss"):
            if b.get(k) is not None:
                assert _close(a[k], b[k]), (a["kind"], a["step"], k, a[k], b[k])


def test_oom_on_rank1_halves_everywhere_once_and_pause_resume_replays_identically(workspace: Path):
    """A fake OOM on rank 1 at step 3 halves the micro-batch on both ranks, recorded once;
    a pause at step 5 ends every rank (exit 75: `run` says 130) and `run --resume` finishes;
    `replay --check` of the whole (halving edit included) is bit-identical."""
    import time

    session = lm_session(workspace, "oomp", steps=8)
    ctl = workspace / "pause.jsonl"
    ctl.write_text(json.dumps({"v": 1, "type": "pause", "id": "p", "at_step": 5}) + "\n")
    env_fault = {"TUNETERM_FAULT_OOM_AT_STEP": "3", "TUNETERM_FAULT_OOM_RANK": "1"}
    os.environ.update(env_fault)
    try:
        first = _cli(workspace, "run", str(session), "--processes", "2", "--control", str(ctl))
    finally:
        for k in env_fault:
            os.environ.pop(k)
    assert first.returncode == 130, first.stderr[-2000:]
    # `run` on several processes draws rank 0's rows as one process's run does: the edit's line
    assert "step 2: edit applied (oom): batch_size=2 gradient_accumulation=2" in first.stderr.splitlines(), \
        first.stderr
    run_dir = Path(first.stdout.strip())
    time.sleep(0.5)
    assert _group(run_dir) == {}
    assert (run_dir / "checkpoints" / "step-00000005").is_dir()
    halvings = [e for e in rows(run_dir, "events.jsonl") if e["kind"] == "edit"]
    assert [(e["step"], e["source"], e["edit"]["set"]) for e in halvings] == \
        [(2, "oom", {"batch_size": 2, "gradient_accumulation": 2})]
    again = _cli(workspace, "run", "--resume", str(run_dir))
    assert again.returncode == 0, again.stderr[-2000:]
    assert [r["step"] for r in rows(run_dir) if r["kind"] == "train"] == list(range(1, 9))
    replay = _cli(workspace, "replay", str(run_dir), "--check")
    assert replay.returncode == 0, replay.stderr[-2000:]


@pytest.mark.parametrize("kind", ["classification", "lora"])
def test_classifier_and_lora_sessions_on_two_processes_equal_one(workspace: Path, kind: str):
    """A tiny-BERT classifier, plain and with LoRA adapters under live LoRA edits (freeze,
    lora_dropout, train_base, lora_lr_ratio, a refused edit): 2 processes equal 1 within
    1e-4 at every step; the LoRA run replays bit-identically on 2."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "lora"))
    from test_lora_run import LORA, SCRIPT as LORA_SCRIPT, _session

    session = _session(workspace, kind, steps=9, extra=LORA if kind == "lora" else "")
    ctl = workspace / "control.jsonl"
    script = LORA_SCRIPT if kind == "lora" else [m for m in SCRIPT if m["id"] != "fr"]
    ctl.write_text("".join(json.dumps({"v": 1, **m}) + "\n" for m in script))
    one = _cli(workspace, "run", str(session), "--control", str(ctl))
    two = _cli(workspace, "run", str(session), "--processes", "2", "--control", str(ctl))
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-1500:], two.stderr[-1500:])
    m1, m2 = rows(Path(one.stdout.strip())), rows(Path(two.stdout.strip()))
    assert [(r["kind"], r["step"]) for r in m1] == [(r["kind"], r["step"]) for r in m2]
    for a, b in zip(m1, m2):
        for k in ("loss", "grad_norm", "val_loss", "val_accuracy"):
            if a.get(k) is not None:
                assert _close(a[k], b[k]), (a["kind"], a["step"], k, a[k], b[k])
    ev1 = [e["kind"] for e in rows(Path(one.stdout.strip()), "events.jsonl") if e["kind"] in ("edit", "reject")]
    ev2 = [e["kind"] for e in rows(Path(two.stdout.strip()), "events.jsonl") if e["kind"] in ("edit", "reject")]
    assert ev1 == ev2 and ev2.count("edit") == len(script) - (kind == "lora")
    if kind == "lora":
        replay = _cli(workspace, "replay", two.stdout.strip(), "--check")
        assert replay.returncode == 0, replay.stderr[-2000:]


def test_the_group_code_trusts_a_finished_rank_0_over_a_rank_killed_while_closing(monkeypatch):
    """The agent SIGTERMs the ranks still closing down when one exits first; a Python rank in
    its finalisation dies of it (-15). A run rank 0 closed as paused or done stays so; a rank
    killed before that is a crash (128 + signal) whatever rank 0 wrote."""
    from tuneterm.engine import launch

    assert launch.group_code({0: -15, 1: 75}, 75) == 75
    assert launch.group_code({1: -15}, 0) == 0
    assert launch.group_code({1: -9}, 70) == 137
    assert launch.group_code({1: -9}, 1) == 137
    assert launch.group_code({1: -9}, None) == 137
    assert launch.group_code({0: 1, 1: 1}, 1) == 1
    assert launch.group_code({}, None, stopped_by=15) == 143
    assert launch.group_code({0: 2}, None) == 2
    # Under the agent a rank that ended as planned exits 0 (its code is in the exit file).
    monkeypatch.setenv(launch.EXIT_FILE_ENV, "/nonexistent")
    assert [launch.rank_exit_code(c) for c in (0, 75, 1, 70)] == [0, 0, 1, 70]
    monkeypatch.delenv(launch.EXIT_FILE_ENV)
    assert launch.rank_exit_code(75) == 75


def test_fsdp_refuses_what_it_cannot_train_in_one_line():
    """An explicit triton (its flat AdamW cannot hold DTensor shards) and bf16 parameters:
    each a UserError naming the setting; fp32 + torch kernels with gradient checkpointing
    and compile passes."""
    from types import SimpleNamespace as N

    from tuneterm.errors import UserError

    def session(gc=False):
        return N(runtime=N(gradient_checkpointing=gc), model=N(task="causal-lm"))

    def acc(impl="torch", dtype=torch.float32, compile=False):
        return N(impl=impl, param_dtype=dtype, compile=compile)

    check = S.FSDP.check  # needs no process group
    check(None, acc(compile=True), session(gc=True), None)
    for bad, says in ((acc(impl="triton"), "runtime.kernels"), (acc(dtype=torch.bfloat16), "model.dtype")):
        with pytest.raises(UserError, match=says):
            check(None, bad, session(), None)


def _loading_torch(pid: int) -> bool:
    """Whether process ``pid`` has begun to load torch's library (so its own first lines ran)."""
    try:
        return b"libtorch" in Path(f"/proc/{pid}/maps").read_bytes()
    except OSError:
        return False


def test_ctrl_c_while_the_ranks_start_pauses_at_step_0_and_resumes(workspace: Path):
    """Ctrl-C (SIGINT to the terminal's process group) while the ranks still import torch:
    rank 0 holds it and pauses at its first boundary (a checkpoint at step 0, `run` exits
    130 saying how to continue), the other rank follows, nothing is left running, and
    `run --resume` trains the whole run. Before, rank 0 died of a KeyboardInterrupt, rank 1
    waited a minute for it, and the run read as a lost rank."""
    import signal
    import time

    session = lm_session(workspace, "ctrlc", steps=4)
    env = {**os.environ, "TUNETERM_HOME": str(workspace), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "tuneterm", "run", str(session), "--processes", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    run_dir = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((workspace / "runs").glob("ctrlc-*"))
        rank0 = [pid for pid, r in _group(found[0]).items() if r == "RANK=0"] if found else []
        if rank0 and _loading_torch(rank0[0]) and not (found[0] / "metrics.jsonl").exists():
            run_dir = found[0]
            break
        time.sleep(0.01)
    assert run_dir is not None, "the ranks never started"
    t0 = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert time.monotonic() - t0 < 45, "the group took a rank's timeout to end"
    assert proc.returncode == 130 and "paused; continue with" in err, err[-3000:]
    time.sleep(0.5)
    assert _group(run_dir) == {}, "processes left behind"
    ends = [e for e in rows(run_dir, "events.jsonl") if e["kind"] == "end"]
    assert [(e["state"], e["step"]) for e in ends] == [("paused", 0)]
    again = _cli(workspace, "run", "--resume", str(run_dir))
    assert again.returncode == 0, again.stderr[-2000:]
    assert [r["step"] for r in rows(run_dir) if r["kind"] == "train"] == [1, 2, 3, 4]


def test_a_stop_before_the_ranks_start_reaches_rank_0_as_a_pause(workspace: Path):
    """SIGTERM to `run` while the agent itself still starts (it imports torch, no rank yet):
    the agent holds it and tells rank 0, which pauses at step 0; `run` exits 130."""
    import signal
    import time

    session = lm_session(workspace, "early", steps=4)
    env = {**os.environ, "TUNETERM_HOME": str(workspace), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "tuneterm", "run", str(session), "--processes", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline, run_dir = time.monotonic() + 120, None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((workspace / "runs").glob("early-*"))
        group = _group(found[0]) if found else {}
        agent = [pid for pid, r in group.items() if r == "agent"]
        if agent and len(group) == 1 and _loading_torch(agent[0]):
            run_dir = found[0]
            break
        time.sleep(0.005)
    assert run_dir is not None, "the agent was never seen starting alone"
    proc.send_signal(signal.SIGTERM)  # `run` passes it on to the agent
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "paused; continue with" in err, err[-3000:]
    ends = [e for e in rows(run_dir, "events.jsonl") if e["kind"] == "end"]
    assert [(e["state"], e["step"]) for e in ends] == [("paused", 0)]
    time.sleep(0.5)
    assert _group(run_dir) == {}
