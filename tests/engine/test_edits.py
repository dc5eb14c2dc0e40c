"""Control messages -> checked edits (tuneterm.engine.edits), and edits of the run's length."""

from __future__ import annotations

from engine_helpers import rows

from tuneterm.engine import edits as E
from tuneterm.engine.control import Mailbox
from tuneterm.engine.runs import create_run
from tuneterm.engine.trainer import Trainer
from tuneterm.session.io import load_session
from tuneterm.session.schema import Edit


def test_control_messages_become_commands_with_their_shape_checked():
    c = E.command({"type": "set", "id": "a", "values": {"learning_rate": 1e-4}}, 7)
    assert (c.kind, c.problem, c.edit) == ("edit", None, Edit(step=7, set={"learning_rate": 1e-4}))
    c = E.command({"type": "freeze", "id": "b", "layers": ["layer.0"]}, 3)
    assert c.edit == Edit(step=3, freeze=["layer.0"])
    assert E.command({"type": "stop", "id": "s"}, 9).edit == Edit(step=9, stop=True)
    assert E.command({"type": "pause", "id": "p"}, 9).kind == "pause"
    bad = E.command({"type": "set", "id": "x", "values": {}}, 1)
    assert bad.problem and "non-empty" in bad.problem and bad.logged
    unparsed = E.command({"type": "_invalid", "reason": "not JSON"}, 1)
    assert unparsed.problem == "not JSON" and not unparsed.logged


def test_max_steps_below_the_current_step_becomes_the_current_step():
    assert E.clamped(Edit(step=76, set={"max_steps": 5})).set == {"max_steps": 76}
    assert E.clamped(Edit(step=76, set={"max_steps": 80, "learning_rate": 1e-4})).set["max_steps"] == 80
    assert E.clamped(Edit(step=76, set={"max_steps": 0})).set == {"max_steps": 0}  # 0: back to epochs


def test_set_max_steps_below_the_step_ends_the_run_at_once_and_says_n_of_n(workspace, tiny_session):
    session = load_session(tiny_session(epochs=2), workspace)  # 24 steps
    mailbox = Mailbox()
    mailbox.put({"v": 1, "type": "set", "id": "short", "values": {"max_steps": 5}, "at_step": 10})
    t = Trainer(session, create_run(workspace, session), workspace, sinks=[], mailbox=mailbox)
    t.setup()
    assert t.train() == "done"
    t.cleanup()
    train = [r for r in rows(t.run_dir) if r["kind"] == "train"]
    assert train[-1]["step"] == 10
    log = load_session(t.run_dir / "session.toml", workspace).edits
    assert [(e.step, e.set) for e in log] == [(10, {"max_steps": 10})]
    end = rows(t.run_dir, "events.jsonl")[-1]
    assert (end["kind"], end["state"], end["step"], end["total_steps"]) == ("end", "done", 10, 10)
    # the run ends like any other: evaluated and checkpointed at its last step
    assert [r["step"] for r in rows(t.run_dir) if r["kind"] == "eval"][-1] == 10
    assert (t.run_dir / "checkpoints" / "step-00000010").is_dir()
