"""TUI performance (issue 5): launch to first frame, and key-press-to-repaint latency while
a run streams 50 steps/s with 1,000 sessions queued and a 100,000-point curve open.

    python benchmarks/tui.py [--sessions 1000] [--points 100000] [--rate 50] [--presses 40]

The runner is the in-memory FakeClient of tests/tui (no daemon, no torch): what is measured
is the app. Prints a markdown table for benchmarks/RESULTS.md. Nothing runs at import.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "tui"))

CHILD = r"""
import json, sys, time
sys.path.insert(0, {tests!r})
from fake_client import FakeClient
from tuneterm.tui.app import make_app
from tuneterm.tui.queue_screen import QueueScreen

sessions = json.load(open({sessions!r}))
app = make_app(FakeClient({ws!r}, sessions), poll_interval=0)

async def auto_pilot(pilot):
    print("FRAME", time.time(), flush=True)  # the first screen is composed and painted
    while not (isinstance(app.screen, QueueScreen) and app.screen._order):
        await pilot.pause(0.005)
    await pilot.pause()
    print("ROWS", time.time(), flush=True)
    app.exit()

app.run(headless=True, size=(120, 36), auto_pilot=auto_pilot)
"""


def first_frame(ws: Path, sessions_file: Path, runs: int) -> tuple[list[float], list[float]]:
    code = CHILD.format(tests=str(ROOT / "tests" / "tui"), sessions=str(sessions_file), ws=str(ws))
    frames, rows = [], []
    for _ in range(runs):
        t0 = time.time()
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "TEXTUAL": ""})
        marks = dict(line.split() for line in out.stdout.splitlines() if line.startswith(("FRAME", "ROWS")))
        if "FRAME" not in marks:
            raise SystemExit(f"the app did not start:\n{out.stderr[-2000:]}")
        frames.append(float(marks["FRAME"]) - t0)
        rows.append(float(marks["ROWS"]) - t0)
    return frames, rows


def streaming_client(ws: Path, n_sessions: int, points: int, rate: float):
    from fake_client import FakeClient, build_workspace

    sessions = build_workspace(ws, n_extra=max(0, n_sessions - 5))
    target = sessions[1]  # bbc-minilm, running
    target.update(step=points, total_steps=points * 2)

    class Streaming(FakeClient):
        def subscribe(self, ref, *, history: bool = True):
            return self._rows()

        def _rows(self):
            for s in range(1, points + 1):
                yield {"type": "metric", "data": {"kind": "train", "step": s, "epoch": s / 1000,
                                                  "loss": 2.0 / (1 + s / 5000) + 0.05 * ((s * 7919) % 13) / 13,
                                                  "lr": 5e-5 * (1 - s / (2 * points))}}
                if s % 500 == 0:
                    yield {"type": "metric", "data": {"kind": "eval", "step": s, "val_loss": 1.0 / (1 + s / 8000),
                                                      "val_accuracy": min(0.95, s / points)}}
            s = points
            period = 1.0 / rate
            nxt = time.perf_counter()
            while not self._closed.is_set():  # live: `rate` steps per second
                s += 1
                target["step"] = s
                yield {"type": "metric", "data": {"kind": "train", "step": s, "epoch": s / 1000,
                                                  "loss": 2.0 / (1 + s / 5000), "lr": 2.5e-5}}
                nxt += period
                time.sleep(max(0.0, nxt - time.perf_counter()))

    return Streaming(ws, sessions), target


async def repaint_latency(pilot, key: str | tuple, presses: int, changed) -> list[float]:
    """Post the key as the terminal driver would; wait until the app has handled it
    (``changed(before)`` sees the effect), then until the next repaint has been written."""
    from textual import events

    app = pilot.app
    out = []
    keys = (key,) if isinstance(key, str) else key
    for i in range(presses):
        before = changed(None)
        done = asyncio.Event()
        t0 = time.perf_counter()
        app.post_message(events.Key(keys[i % len(keys)], None))
        while changed(None) == before:
            if time.perf_counter() - t0 > 10:
                raise SystemExit(f"key {keys[i % len(keys)]!r} had no visible effect")
            await asyncio.sleep(0)
        app.call_after_refresh(done.set)
        await done.wait()
        out.append(time.perf_counter() - t0)
        await asyncio.sleep(0.1)
    return out


def latency(ws: Path, n_sessions: int, points: int, rate: float, presses: int) -> dict:
    from tuneterm.tui.app import make_app
    from tuneterm.tui.queue_screen import QueueScreen
    from tuneterm.tui.session_screen import SessionScreen

    client, target = streaming_client(ws, n_sessions, points, rate)
    app = make_app(client, poll_interval=1.0)
    result: dict = {}

    async def run() -> None:
        async with app.run_test(size=(120, 36)) as pilot:
            while not (isinstance(app.screen, QueueScreen) and len(app.screen._order) == n_sessions):
                await pilot.pause(0.01)
            table = app.screen.query_one("#queue")
            result["queue_down"] = await repaint_latency(pilot, ("down", "up"), presses,
                                                         lambda _: table.cursor_row)
            await pilot.press("home")
            t0 = time.perf_counter()
            await pilot.press("down", "enter")
            while not (isinstance(app.screen, SessionScreen) and app.screen.view.step > points):
                await pilot.pause(0.01)
            result["history_load_s"] = time.perf_counter() - t0
            s0, t0 = app.screen.view.step, time.perf_counter()
            knobs = app.screen.query_one("#knobs-table")
            knobs.focus()
            await pilot.pause()
            result["session_down"] = await repaint_latency(pilot, ("down", "up"), presses,
                                                           lambda _: knobs.cursor_row)
            tabs = app.screen.query_one("#tabs")
            result["session_tab"] = await repaint_latency(pilot, "right_square_bracket", presses,
                                                          lambda _: tabs.active)
            result["streamed_steps_per_s"] = (app.screen.view.step - s0) / (time.perf_counter() - t0)
            result["points"] = len(app.screen.view.train_loss)
            client.close()

    asyncio.run(run())
    return result


def chart_cost(points: int) -> dict:
    from tuneterm.tui.chart import Line, rasterize
    from tuneterm.tui.series import MinMaxSeries

    out = {}
    for n in (100, points):
        s = MinMaxSeries()
        for i in range(n):
            s.add(i, 1.0 / (1 + i))
        t0 = time.perf_counter()
        for _ in range(20):
            rasterize([Line(s, "red", "x")], 34, 6)
        out[n] = (time.perf_counter() - t0) / 20
    return out


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(0.95 * len(xs)))]
    return f"median {1e3 * statistics.median(xs):.1f} ms, p95 {1e3 * p95:.1f} ms, max {1e3 * xs[-1]:.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=50.0, help="live steps per second")
    ap.add_argument("--presses", type=int, default=40)
    ap.add_argument("--launches", type=int, default=5)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        from fake_client import build_workspace

        ws = Path(tmp) / "ws"
        sessions = build_workspace(ws)
        sf = Path(tmp) / "sessions.json"
        sf.write_text(json.dumps(sessions))
        frames, rows = first_frame(ws, sf, args.launches)
        lat = latency(Path(tmp) / "ws-big", args.sessions, args.points, args.rate, args.presses)
    charts = chart_cost(args.points)

    cpu = f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    try:
        load = "load average %.1f" % os.getloadavg()[0]
    except OSError:
        load = ""
    print(f"## TUI ({cpu}; {load}; Python {platform.python_version()})\n")
    print("| measure | result | target |")
    print("|---|---|---|")
    print(f"| launch to first frame (process start, {args.launches} runs) | {ms(frames)} | < 1 s |")
    print(f"| launch to the queue's rows | {ms(rows)} | |")
    print(f"| key press to repaint, queue of {args.sessions} sessions (↓/↑) | {ms(lat['queue_down'])} | < 100 ms |")
    what = (f"session screen: {lat['points']:,}-point curve, {lat['streamed_steps_per_s']:.0f} steps/s "
            f"streaming, {args.sessions} queued")
    print(f"| key press to repaint, {what} (↓/↑ in a table) | {ms(lat['session_down'])} | < 100 ms |")
    print(f"| key press to repaint, {what} (next tab: a layout pass) | {ms(lat['session_tab'])} | < 100 ms |")
    print(f"| loading the {args.points:,}-step history | {lat['history_load_s']:.2f} s | |")
    print(f"| drawing one chart: 100 points vs {args.points:,} points | "
          f"{1e3 * charts[100]:.2f} ms vs {1e3 * charts[args.points]:.2f} ms | same |")


if __name__ == "__main__":
    main()
