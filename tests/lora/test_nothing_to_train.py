"""Nothing left to train is refused before it happens, by counting the parameters that would
train (not the names of frozen groups): a LoRA run whose unfrozen groups hold no adapters
and train no base weights would crash at its next step, and a logged edit would crash every
retry, resume and replay after it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_helpers import rows, run_cli
from tiny_sessions import tiny_session_toml

LORA = '\n[lora]\nenabled = true\nr = 4\nalpha = 8\n'
# tiny-BERT with LoRA: embeddings hold no adapters (no linear layer), so freezing the
# other three groups leaves nothing to train unless embeddings trains its base.
ADAPTER_GROUPS = '["layer.0", "layer.1", "head"]'


def _session(workspace: Path, name: str, extra: str, *, causal: bool = False, lora: str = "") -> Path:
    text = tiny_session_toml(name, seed=3, steps=6, eval_interval=0, checkpoint_interval=0)
    if causal:
        text = text.replace('source = "builtin:tiny-bert"', 'source = "builtin:tiny-llama"\ntask = "causal-lm"')
        text = text.replace('source = "builtin:bbc-news"', 'source = "data/lm.jsonl"')
        (workspace / "data").mkdir(exist_ok=True)
        (workspace / "data" / "lm.jsonl").write_text("".join(
            json.dumps({"prompt": f"say {w}", "completion": f" {w} {w}"}) + "\n" for w in "abcdefghijklmnop"))
    path = workspace / "sessions" / f"{name}.toml"
    path.write_text(text + LORA + lora + extra)
    return path


def _line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def _refused(workspace: Path, capsys, path: Path, verb: str = "validate") -> str:
    code, out, err = run_cli([verb, str(path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert not list((workspace / "runs").iterdir())
    return err.strip().removeprefix("tuneterm: error: ")


@pytest.mark.parametrize("causal", [False, True])
def test_freezing_every_group_with_adapters_is_refused_before_a_run(workspace, capsys, causal):
    frozen = '["layer.0", "layer.1"]' if causal else ADAPTER_GROUPS  # a causal LM's head has no adapters
    s = _session(workspace, "frozen", f"\n[freeze]\nlayers = {frozen}\n", causal=causal)
    for verb in ("validate", "run"):
        err = _refused(workspace, capsys, s, verb)
        assert err.startswith(f"{s}:{_line(s, 'layers = ')}: freeze.layers: nothing would train: "), err
        assert "no adapters" in err and "lora.train_base" in err


# (what [lora] adds, the rest of the file, the text on the blamed line, the key blamed)
EDIT_LOGS = {
    "freeze": ("", f"\n[[edits]]\nstep = 2\nfreeze = {ADAPTER_GROUPS}\n", "freeze = ", "edits[0].freeze"),
    # the base of embeddings trains, then a recorded edit turns it off
    "train_base": ('train_base = ["embeddings"]\n',
                   f"\n[freeze]\nlayers = {ADAPTER_GROUPS}\n\n[[edits]]\nstep = 2\nset = {{ train_base = [] }}\n",
                   "set = { train_base", "edits[0].set.train_base"),
}


@pytest.mark.parametrize("case", list(EDIT_LOGS))
def test_an_edit_log_that_leaves_nothing_to_train_is_refused(workspace, capsys, case):
    lora, extra, text, key = EDIT_LOGS[case]
    s = _session(workspace, case, extra, lora=lora)
    for verb in ("validate", "run", "replay"):
        err = _refused(workspace, capsys, s, verb)
        assert err.startswith(f"{s}:{_line(s, text)}: {key}: at step 2 nothing would be left to train: "), err


def test_a_live_edit_that_leaves_nothing_to_train_is_refused_and_not_logged(workspace, capsys):
    script = [
        {"type": "freeze", "id": "all", "layers": ["layer.0", "layer.1", "head"], "at_step": 1},  # refused
        {"type": "set", "id": "tb", "values": {"train_base": ["embeddings"]}, "at_step": 2},
        {"type": "freeze", "id": "ok", "layers": ["layer.0", "layer.1", "head"], "at_step": 3},  # embeddings trains
        {"type": "set", "id": "off", "values": {"train_base": []}, "at_step": 4},  # refused
    ]
    ctl = workspace / "control.jsonl"
    ctl.write_text("".join(json.dumps({"v": 1, **m}) + "\n" for m in script))
    code, out, err = run_cli(["run", str(_session(workspace, "live", "")), "--control", str(ctl)], capsys)
    assert code == 0, err
    run_dir = Path(out.strip())
    events = rows(run_dir, "events.jsonl")
    rejects = {e["id"]: e["reason"] for e in events if e["kind"] == "reject"}
    assert set(rejects) == {"all", "off"}, rejects
    assert all(r.startswith("this edit would leave nothing to train: ") for r in rejects.values()), rejects
    assert events[-1]["kind"] == "end" and events[-1]["state"] == "done"
    from tuneterm.session.io import load_session

    edits = load_session(run_dir / "session.toml", workspace).edits
    assert [(e.step, e.set, e.freeze) for e in edits] == [(2, {"train_base": ["embeddings"]}, []),
                                                          (3, {}, ["layer.0", "layer.1", "head"])]
    # the log as recorded replays and resumes: nothing in it crashes a step
    code, out, err = run_cli(["replay", str(run_dir), "--check"], capsys)
    assert code == 0, err


def test_a_run_whose_log_already_holds_such_an_edit_fails_in_one_line_at_that_step(workspace, capsys):
    """A log written before these checks (or by hand): resuming it stops at the edit with the
    reason, rather than crashing in autograd at the next step."""
    from tuneterm.engine.runs import create_run
    from tuneterm.session.io import loads_session
    from tuneterm.session.schema import Edit

    s = _session(workspace, "old", "")
    session = loads_session(s.read_text(), str(s), workspace)
    session.edits = [Edit(step=2, freeze=["layer.0", "layer.1", "head"])]
    run_dir = create_run(workspace, session)
    code, out, err = run_cli(["run", "--resume", str(run_dir)], capsys)
    assert code == 1 and "Traceback" not in err, err
    assert ("edit log: the edit at step 2 cannot apply: this edit would leave nothing to train: the unfrozen "
            "groups (embeddings) hold no adapters") in err, err
    end = rows(run_dir, "events.jsonl")[-1]
    assert end["kind"] == "end" and end["state"] == "failed" and end["step"] == 2
