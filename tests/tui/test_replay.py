"""The replay screen compares a replay only once it has really ended: an interrupted replay
(the runner resumes it) is followed until it finishes, then compared."""

from __future__ import annotations

from pathlib import Path

from tui_helpers import aio, wait_until

from tuneterm.rundir import read_jsonl
from tuneterm.tui.app import make_app
from tuneterm.tui.replay_screen import ReplayScreen

SIZE = (120, 36)


def _write(path: Path, rows: list[dict]) -> None:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


async def _queued_replay(pilot, fake):
    app = pilot.app
    await wait_until(pilot, lambda: len(app.sessions) > 0, what="the queue")
    await pilot.press("y")  # the finished tweets-minilm run
    await wait_until(pilot, lambda: isinstance(app.screen, ReplayScreen) and len(app.screen.original) > 0,
                     what="replay screen")
    screen = app.screen
    await pilot.press("r")
    await wait_until(pilot, lambda: screen.replay_id is not None, what="queued")
    return screen


def _result(screen) -> str:
    return str(screen.query_one("#replay-result").render())


@aio
async def test_an_interrupted_replay_is_followed_until_it_ends_then_compared(fake):
    app = make_app(fake, poll_interval=0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _queued_replay(pilot, fake)
        orig = read_jsonl(Path(fake.sessions[0]["run_dir"]) / "metrics.jsonl")
        new = fake.workspace / "runs" / "replay"
        new.mkdir()
        half = [r for r in orig if r["step"] <= 70]
        _write(new / "metrics.jsonl", half)
        s = fake.sessions[-1]
        # the daemon stopped under the replay: interrupted, not ended (it resumes on start)
        s.update(state="interrupted", run_dir=str(new), step=70, total_steps=150)
        app.poll()
        await wait_until(pilot, lambda: "interrupted" in _result(screen) and len(screen.replayed) == 70,
                         timeout=10, what="the interrupted replay shown")
        for _ in range(3):  # a few more ticks of the screen's watch: still no verdict
            await wait_until(pilot, lambda: not screen._busy, what="a watch tick")
            await pilot.pause(0.4)
        assert screen.result == "" and screen.replay_id is not None
        assert "mismatch" not in _result(screen)

        # resumed: running again, then done with every row (the resumed attempt rewrote
        # the steps after its checkpoint; wall-clock fields differ)
        s.update(state="running", step=100)
        app.poll()
        await wait_until(pilot, lambda: "running" in _result(screen), timeout=10, what="running again")
        _write(new / "metrics.jsonl", [dict(r, time=123.0) for r in orig])
        s.update(state="done", step=150)
        app.poll()
        await wait_until(pilot, lambda: screen.result == "match", timeout=10, what="the comparison")
        assert "match" in _result(screen) and screen.replay_id is None


@aio
async def test_a_failed_replay_is_reported_not_compared(fake):
    app = make_app(fake, poll_interval=0)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _queued_replay(pilot, fake)
        new = fake.workspace / "runs" / "replay"
        new.mkdir()
        _write(new / "metrics.jsonl", read_jsonl(Path(fake.sessions[0]["run_dir"]) / "metrics.jsonl")[:5])
        fake.sessions[-1].update(state="failed", run_dir=str(new), step=5, error="training failed: loss is nan")
        app.poll()
        await wait_until(pilot, lambda: screen.result == "failed", timeout=10, what="the failure")
        assert "loss is nan" in _result(screen) and "mismatch" not in _result(screen)
