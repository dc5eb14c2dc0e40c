"""A DPO session on two processes (gloo, DDP and FSDP2): the loss and every reward metric of
every step are the global batch's, equal to one process's within 1e-4, with each kind of
reference (precomputed, a frozen copy, the policy with its LoRA adapters off); the
precomputed reference cache is looked for and written by rank 0 alone."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from engine_helpers import rows, run_cli
from pref_helpers import pref_session

from tuneterm.engine import pref_reference as REF
from tuneterm.engine.tasks.preference import STATS
from tuneterm.session.schema import DIST_STRATEGIES


def _close(a: float, b: float, tol: float = 1e-4) -> bool:
    # relative, with an absolute floor: at step 1 the rewards are 0 up to rounding
    return abs(a - b) <= tol * max(abs(a), abs(b), 1.0)


def _on_2_then_1(session: Path, capsys, extra: list | None = None) -> tuple[Path, Path]:
    """The session run on 2 processes, then on 1: (run on 2, run on 1), after checking that
    the loss and every reward metric of every row agree within 1e-4, and that the margins
    moved (the comparison is not of zeros alone)."""
    runs = []
    for procs in (["--processes", "2"], []):
        code, out, err = run_cli(["run", str(session), *procs, *(extra or [])], capsys)
        assert code == 0, err
        runs.append(Path(out.strip()))
    m2, m1 = rows(runs[0]), rows(runs[1])
    assert [(r["kind"], r["step"]) for r in m1] == [(r["kind"], r["step"]) for r in m2]
    keys = {"loss", "val_loss"} | set(STATS) | {f"val_{k}" for k in STATS}
    for a, b in zip(m1, m2):
        assert {k for k in keys if k in a} == {k for k in keys if k in b}, (a, b)
        for k in keys & a.keys():
            assert _close(a[k], b[k]), (a["kind"], a["step"], k, a[k], b[k])
    assert any(abs(r["reward_margin"]) > 1e-3 for r in m2 if r["kind"] == "train")
    return runs[0], runs[1]


@pytest.mark.parametrize("strategy", DIST_STRATEGIES)
def test_two_processes_report_the_global_batchs_reward_metrics(workspace: Path, capsys, strategy):
    # 9 training pairs at batch 4: every third step is one pair, so rank 1's share is empty there
    s = pref_session(workspace, f"dist-{strategy}", steps=6, checkpoint_interval=3,
                     preference='reference = "precompute"',
                     extra=f'\n[distributed]\nstrategy = "{strategy}"\n')
    s.write_text(s.read_text().replace("validation_split = 0.2", "validation_split = 0.2\nmax_samples = 9"))
    two, one = _on_2_then_1(s, capsys)  # first on 2: it computes the cache
    start = next(e for e in rows(two, "events.jsonl") if e["kind"] == "start")
    assert start["reference_cache"] == "computed"
    assert [p.name for p in two.iterdir() if "reference-" in p.name] == [start["reference_file"]]
    again = next(e for e in rows(one, "events.jsonl") if e["kind"] == "start")
    assert (again["reference_cache"], again["reference_file"]) == ("cached", start["reference_file"])


def test_only_the_leader_looks_for_and_writes_the_reference_cache(tmp_path: Path):
    """Rank 0 decides for every rank: a follower takes the values it sends, or — when it sent
    none — computes them in memory (as rank 0 does at the same time, every forward in step
    under FSDP); a follower never reads nor writes the run directory."""
    class Pairs(list):
        pairs: list = []

    sent = {"train_chosen": [0.5, 1.5], "train_rejected": [-0.5, -1.5], "val_chosen": [0.25],
            "val_rejected": [-0.25]}
    for leader_found in (None, sent):
        data = SimpleNamespace(train=Pairs([0, 1]), val=Pairs([0]))
        broadcasts = []

        def broadcast(obj, got=leader_found):
            broadcasts.append(obj)
            return got or []  # what a follower receives: [] when rank 0 sends nothing

        follower = SimpleNamespace(is_leader=False, rank=1, world=2, broadcast=broadcast)
        env = SimpleNamespace(run_dir=tmp_path, workspace=None, replay_of=None, dtype=torch.float32,
                              acc=SimpleNamespace(autocast_dtype=None), strategy=follower)
        model = torch.nn.Linear(2, 2)
        # a file of the right name in the run directory: not the follower's to read
        name = REF.CACHE.format(REF.fingerprint(model, data, 8, (torch.float32, None)))
        (tmp_path / name).write_bytes(b"not read by a follower")
        calls = []

        def compute(split):
            calls.append(len(split))
            return torch.arange(len(split)) * 1.0, -torch.arange(len(split)) * 1.0

        got, how = REF.load_or_compute(model, data, env, 8, compute)
        assert got == name and broadcasts == [None]
        assert [p.name for p in tmp_path.iterdir()] == [name]  # nothing written by a follower
        assert (tmp_path / name).read_bytes() == b"not read by a follower"
        if leader_found is None:
            assert how == "computed" and calls == [2, 1]
            assert torch.equal(data.train.ref[1], torch.tensor([0.0, -1.0]))
        else:
            assert how == "cached" and calls == [] and torch.equal(data.train.ref[0], torch.tensor([0.5, 1.5]))
            assert torch.equal(data.val.ref[1], torch.tensor([-0.25]))
        (tmp_path / name).unlink()


@pytest.mark.parametrize("reference", ["frozen copy", "adapters off"])
def test_fsdp_trains_a_dpo_session_as_one_process_does(workspace: Path, capsys, reference):
    """FSDP2 with the reference computed each step: a frozen copy of the model as built (whole
    on every rank), or the sharded policy with its LoRA adapters off (under a live beta edit
    there: the knob reaches every rank)."""
    lora = "[lora]\nenabled = true\nr = 4\nalpha = 8\ndropout = 0.0\n" if reference == "adapters off" else ""
    s = pref_session(workspace, "fsdp-" + reference.replace(" ", "-"), steps=4, checkpoint_interval=4, lora=lora,
                     extra='\n[distributed]\nstrategy = "fsdp"\n')
    if lora:
        (workspace / "beta.jsonl").write_text('{"v": 1, "type": "set", "id": "b", "values": {"beta": 0.2}, '
                                              '"at_step": 2}\n')
    edits = ["--control", str(workspace / "beta.jsonl")] if lora else []
    two, _ = _on_2_then_1(s, capsys, edits)
    start = next(e for e in rows(two, "events.jsonl") if e["kind"] == "start")
    assert start["reference"] == ("adapters-off" if lora else "frozen-copy")
    if lora:
        assert [e["edit"]["step"] for e in rows(two, "events.jsonl") if e["kind"] == "edit"] == [2]
