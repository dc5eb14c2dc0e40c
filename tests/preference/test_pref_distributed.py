"""A DPO session on two processes (gloo): the loss and every reward metric of every step are
the global batch's, equal to one process's within 1e-4; the precomputed reference cache is
written by rank 0 alone."""

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


@pytest.mark.parametrize("strategy", DIST_STRATEGIES)
def test_two_processes_report_the_global_batchs_reward_metrics(workspace: Path, capsys, strategy):
    if strategy == "fsdp":
        s = pref_session(workspace, "fsdp", steps=2, extra='\n[distributed]\nstrategy = "fsdp"\n')
        code, out, err = run_cli(["run", str(s), "--processes", "2"], capsys)
        assert code == 2 and 'does not train a preference task yet' in err, err
        assert not any((workspace / "runs").iterdir())  # refused before anything was left behind
        return
    # 9 training pairs at batch 4: every third step is one pair, so rank 1's share is empty there
    s = pref_session(workspace, f"dist-{strategy}", steps=6, checkpoint_interval=3,
                     preference='reference = "precompute"',
                     extra=f'\n[distributed]\nstrategy = "{strategy}"\n')
    s.write_text(s.read_text().replace("validation_split = 0.2", "validation_split = 0.2\nmax_samples = 9"))
    code, out, err = run_cli(["run", str(s), "--processes", "2"], capsys)  # first: it computes the cache
    assert code == 0, err
    two = Path(out.strip())
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 0, err
    one = Path(out.strip())
    m1, m2 = rows(one), rows(two)
    assert [(r["kind"], r["step"]) for r in m1] == [(r["kind"], r["step"]) for r in m2]
    keys = {"loss", "val_loss"} | set(STATS) | {f"val_{k}" for k in STATS}
    for a, b in zip(m1, m2):
        assert {k for k in keys if k in a} == {k for k in keys if k in b}, (a, b)
        for k in keys & a.keys():
            assert _close(a[k], b[k]), (a["kind"], a["step"], k, a[k], b[k])
    # the margins moved: the comparison is not of zeros alone
    assert any(abs(r["reward_margin"]) > 1e-3 for r in m1 if r["kind"] == "train")
    start = next(e for e in rows(two, "events.jsonl") if e["kind"] == "start")
    assert start["reference_cache"] == "computed"
    assert [p.name for p in two.iterdir() if "reference-" in p.name] == [start["reference_file"]]
    again = next(e for e in rows(one, "events.jsonl") if e["kind"] == "start")
    assert (again["reference_cache"], again["reference_file"]) == ("cached", start["reference_file"])


def test_only_the_leader_writes_the_reference_cache(tmp_path: Path):
    """A rank other than 0 reads a cache it finds, else computes the log-probs in memory;
    it never writes into the run directory (rank 0 does, at the same time)."""
    class Pairs(list):
        pairs: list = []

    data = SimpleNamespace(train=Pairs([0, 1]), val=Pairs([0]))
    follower = SimpleNamespace(is_leader=False, rank=1, world=2)
    env = SimpleNamespace(run_dir=tmp_path, workspace=None, replay_of=None, dtype=torch.float32,
                          acc=SimpleNamespace(autocast_dtype=None), strategy=follower)
    model = torch.nn.Linear(2, 2)
    calls = []

    def compute(split):
        calls.append(len(split))
        return torch.arange(len(split)) * 1.0, -torch.arange(len(split)) * 1.0

    name, how = REF.load_or_compute(model, data, env, 8, compute)
    assert how == "computed" and calls == [2, 1]
    assert list(tmp_path.iterdir()) == []  # nothing written by a follower
    assert torch.equal(data.train.ref[1], torch.tensor([0.0, -1.0]))
