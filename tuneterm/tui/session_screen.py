"""One session: live charts, the knobs, the layers, the timeline, the log, guidance."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Header, Log, Static, TabbedContent, TabPane

from tuneterm import protocol
from tuneterm.rundir import JsonlTail, RunDir
from tuneterm.tui.chart import Line, LineChart
from tuneterm.tui.confusion import TRAINED_STATES, add_tab as add_confusion_tab
from tuneterm.tui.data import RunView, fmt_num, is_finished, read_layers, read_toml
from tuneterm.tui.dialogs import EditValue
from tuneterm.tui.guidance import GUIDANCE
from tuneterm.tui.knobs import check_knob, knob_help
from tuneterm.tui.messages import LogLines, StreamEnded, StreamPending
from tuneterm.tui.panels import KnobsPanel, LayersPanel, TimelinePanel, status_line
from tuneterm.tui.ranks import RanksLine
from tuneterm.tui.samples import add_tab as add_samples_tab
from tuneterm.tui.stream import Stream

TRAIN, VAL, ACC, LR = "#5fafff", "#ffaf5f", "#87d787", "#d787d7"
DRAIN_LIMIT = 20_000  # rows folded per UI turn: a long history loads without freezing keys
PAINT_INTERVAL = 0.1  # at most 10 repaints a second, however fast the run streams
LOG_TAIL_BYTES, LOG_LINES = 256_000, 500  # the Log tab reads no more of a long log.txt than it shows


class SessionScreen(Screen):
    BINDINGS = [
        Binding("escape,q", "back", "Back", id="session.back"),
        Binding("p", "pause", "Pause", id="session.pause"),
        Binding("r", "resume", "Resume", id="session.resume"),
        Binding("x", "cancel", "Cancel", id="session.cancel", show=False),
        Binding("s", "checkpoint", "Checkpoint", id="session.checkpoint"),
        Binding("right_square_bracket", "tab(1)", "Next tab", id="session.next_tab"),
        Binding("left_square_bracket", "tab(-1)", "Prev tab", id="session.prev_tab", show=False),
        Binding("y", "replay", "Replay", id="session.replay", show=False),
    ]
    HELP = ("One session, live. Knobs tab: enter/e edits a value (checked, then sent; "
            "\"applied at step N\" or the reason it was refused). Layers tab: space toggles "
            "a layer's freeze, b freezes it and all below, u unfreezes all.")

    def __init__(self, session_id: Any) -> None:
        super().__init__()
        self.session_id = session_id
        self.view = RunView()
        self.stream: Stream | None = None
        self.run_dir: Path | None = None
        self._log: JsonlTail | None = None
        self._log_busy = False
        self._advice: str | None = None
        self._advice_key: tuple | None = None
        self._status_text = ""
        self._log_timer = None
        self._last_paint = 0.0
        self._paint_pending = False

    # -- layout
    def compose(self) -> ComposeResult:
        v = self.view
        yield Header(icon="≈")
        yield Static("", id="run-status")
        yield RanksLine(id="run-ranks")  # a multi-process session's ranks
        yield Static("", id="guidance-banner")
        with Horizontal(id="charts"):
            yield LineChart("loss", [Line(v.train_loss, TRAIN, "train"), Line(v.val_loss, VAL, "val")],
                            id="chart-loss")
            yield LineChart("val accuracy", [Line(v.val_accuracy, ACC, "acc")], id="chart-acc")
            yield LineChart("learning rate", [Line(v.lr, LR, "lr")], id="chart-lr")
        with TabbedContent(id="tabs"):
            with TabPane("Knobs", id="tab-knobs"):
                yield KnobsPanel(id="knobs")
            with TabPane("Layers", id="tab-layers"):
                yield LayersPanel(id="layers")
            with TabPane("Timeline", id="tab-timeline"):
                yield TimelinePanel(id="timeline")
            with TabPane("Log", id="tab-log"):
                yield Log(id="log", max_lines=1000)
            with TabPane("Guidance", id="tab-guidance"):
                yield Static("", id="guidance")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#guidance-banner").display = False
        self._focus_tab()  # `e` (Knobs) and `space` (Layers) work at once, without a Tab first
        s = self.session
        if s is None:
            sid = self.session_id
            self.app.request("get", lambda c: c.get(sid), then=self._got)
        else:
            self._start(s)

    @on(TabbedContent.TabActivated)
    def _focus_tab(self, event: TabbedContent.TabActivated | None = None) -> None:
        """Give the focus to the active tab's table (or log), where its keys are bound."""
        pane = event.pane if event is not None else self.query_one(TabbedContent).active_pane
        focusable = [w for w in (pane.query("DataTable, Log") if pane is not None else ()) if w.focusable]
        if focusable:
            focusable[0].focus()

    def _got(self, s: dict) -> None:
        if isinstance(s, dict):
            self._start(s)

    def _start(self, s: dict) -> None:
        self.sub_title = str(s.get("name", ""))
        self.run_dir = self.app.run_dir_of(s)
        if self.run_dir is not None:
            self.view.load_session_toml(read_toml(RunDir(self.run_dir).session))
            self.view.set_layers(read_layers(self.run_dir))
            self._task_charts()
        self.view.state = str(s.get("state", ""))
        self._subscribe()
        self._poll_log()
        if self._log_timer is None:
            self._log_timer = self.set_interval(1.0, self._poll_log)
        self.update_views()
        add_confusion_tab(self, s)  # a finished classification run: the Confusion tab
        add_samples_tab(self, s)  # a causal-LM run: the Samples tab

    def _task_charts(self) -> None:
        """The task's charts (session/tasks.py): the accuracy chart's title and lines, and a
        second chart beside it when the task has one (preference: reward accuracy, margin)."""
        v, charts = self.view, self.view.charts
        if not charts:
            return
        acc = self.query_one("#chart-acc", LineChart)
        if acc.chart_title != charts[0].title:
            acc.set_title(charts[0].title)
        if charts[0].train:
            acc.lines = [Line(v.chart_train, TRAIN, "train"), Line(v.val_accuracy, ACC, "val")]
        if len(charts) > 1 and not self.query("#chart-extra"):
            self.query_one("#charts").mount(LineChart(charts[1].title, [Line(v.extra_train, TRAIN, "train"),
                                                                       Line(v.extra_val, VAL, "val")],
                                                      id="chart-extra"), before="#chart-lr")

    def _subscribe(self) -> None:
        if self.stream is not None:
            self.stream.stop()
        client, sid = self.app.client, self.session_id
        self.stream = Stream(lambda: client.subscribe(sid, history=True), self.post_message).start()

    def on_unmount(self) -> None:
        if self.stream is not None:
            self.stream.stop()

    @property
    def session(self) -> dict | None:
        return self.app.session_by_id(self.session_id)

    # -- the stream
    @on(StreamPending)
    def _drain(self) -> None:
        if self.stream is None:
            return
        reload_layers = False
        for msg in self.stream.drain(DRAIN_LIMIT):
            t = msg.get("type")
            data = msg.get("data") if isinstance(msg.get("data"), dict) else {}
            if t == "metric":
                self.view.add_metric(data)
            elif t == "event":
                if data.get("kind") == "start":
                    reload_layers = True
                self.view.add_event(data)
            elif t == "state" and isinstance(msg.get("state"), str):
                self.view.state = msg["state"]
        if reload_layers and self.run_dir is not None:
            layers = read_layers(self.run_dir)
            if layers:
                frozen = {x["name"]: x["frozen"] for x in self.view.layers}
                for x in layers:  # edits already folded in win over the file's start state
                    x["frozen"] = frozen.get(x["name"], x["frozen"])
                self.view.set_layers(layers)
        if self.view.state in TRAINED_STATES:  # it ended while this screen was open
            add_confusion_tab(self, {"state": self.view.state})
        if self.stream.buffer:
            self.post_message(StreamPending())
        self._schedule_paint()

    def _schedule_paint(self) -> None:
        """Rows are folded as they come; widgets repaint at most every PAINT_INTERVAL
        (a repaint per step at 50 steps/s would starve key presses)."""
        if self._paint_pending:
            return
        wait = PAINT_INTERVAL - (time.monotonic() - self._last_paint)
        if wait <= 0:
            self.update_views()
        else:
            self._paint_pending = True
            self.set_timer(wait, self._paint_later)

    def _paint_later(self) -> None:
        self._paint_pending = False
        self.update_views()

    @property
    def painted(self) -> bool:
        """No repaint is waiting (tests and snapshots wait for this)."""
        return not self._paint_pending and (self.stream is None or not self.stream.buffer)

    @on(StreamEnded)
    def _ended(self, msg: StreamEnded) -> None:
        if msg.error:
            self.notify(f"stream: {msg.error}", severity="warning")
        s = self.session
        if s is not None and not is_finished(s.get("state")):  # interrupted too: the runner resumes it
            # the session goes on (the daemon restarted, or it ended an idle stream):
            # follow it again, history first, in a moment
            self.set_timer(2.0, self._resubscribe)

    def _resubscribe(self) -> None:
        if not self.is_attached or (self.stream is not None and self.stream._thread.is_alive()):
            return
        self.view.clear()
        if self.run_dir is not None:
            self.view.load_session_toml(read_toml(RunDir(self.run_dir).session))
            self.view.set_layers(read_layers(self.run_dir))
        self.query_one(TimelinePanel).show(self.view)  # notices the shorter timeline
        self._subscribe()

    def sessions_changed(self, sessions: list[dict]) -> None:
        s = self.session
        if s is None:
            return
        if self.run_dir is None and s.get("run_dir"):
            self._start(s)  # the queued session got its run directory
            return
        self._status(s)

    # -- painting
    def update_views(self) -> None:
        self._last_paint = time.monotonic()
        for chart in self.query(LineChart):
            chart.update_data()
        self.query_one(KnobsPanel).show(self.view)
        self.query_one(LayersPanel).show(self.view)
        self.query_one(TimelinePanel).show(self.view)
        s = self.session
        if s is not None:
            self._status(s)
        key = (len(self.view.evals), self.view.evals[-1]["step"] if self.view.evals else None)
        if key != self._advice_key:  # the advice can change only with a new evaluation
            self._advice_key = key
            advice = self.view.guidance()
            if advice != self._advice or key[0] == 0:
                self._advice = advice
                banner = self.query_one("#guidance-banner", Static)
                banner.display = advice is not None
                banner.update(Text("⚠ overfitting — see the Guidance tab", style="bold yellow") if advice else "")
                self.query_one("#guidance", Static).update(Text(advice or GUIDANCE))

    def _status(self, s: dict) -> None:
        self.query_one(RanksLine).show(s, self.run_dir)
        text = status_line(self.view, s, max(self.size.width - 2, 20))
        if text.plain != self._status_text:
            self._status_text = text.plain
            # one fixed-height line: no layout pass per step
            self.query_one("#run-status", Static).update(text, layout=False)

    # -- the log's tail
    def _poll_log(self) -> None:
        if self.run_dir is None or self._log_busy:
            return
        self._log_busy = True
        path = RunDir(self.run_dir).log
        if self._log is None or self._log.path != path:
            self._log = JsonlTail(path, limit=LOG_TAIL_BYTES)
        self.app.run_in_thread("log", self._log.read_new, then=self._log_read)

    def _log_read(self, result: tuple[bool, bytes]) -> None:
        self._log_busy = False
        rewritten, data = result
        if rewritten or data:  # a rewritten log (a shorter file) starts the tab again
            self.post_message(LogLines(data.decode("utf-8", "replace").splitlines()[-LOG_LINES:], reset=rewritten))

    @on(LogLines)
    def _log_lines(self, msg: LogLines) -> None:
        log = self.query_one("#log", Log)
        if msg.reset:
            log.clear()
        if msg.lines:
            log.write_lines(msg.lines)

    # -- live edits
    @on(KnobsPanel.EditRequested)
    def _edit_knob(self, msg: KnobsPanel.EditRequested) -> None:
        key = msg.key

        def send(value) -> None:
            if value is None:
                return
            panel = self.query_one(KnobsPanel)
            panel.set_status(key, f"sending {fmt_num(value)}…", "dim")
            panel.show(self.view)
            self._control(f"set {key}", protocol.control("set", values={key: value}),
                          lambda r: self._knob_reply(key, value, r),
                          lambda e: self._knob_reply(key, value, {"type": "reject", "reason": e}))

        self.app.push_screen(EditValue(key, self.view.knobs.get(key), knob_help(key),
                                       lambda text: check_knob(key, text)), send)

    def _knob_reply(self, key: str, value: Any, reply: Any) -> None:
        panel = self.query_one(KnobsPanel)
        if isinstance(reply, dict) and reply.get("type") == "ack":
            panel.set_status(key, f"{fmt_num(value)} applied at step {reply.get('step')}", "green")
            self.view.knobs[key] = value
        else:
            reason = reply.get("reason") if isinstance(reply, dict) else reply
            panel.set_status(key, f"rejected: {reason}", "red")
            self.notify(f"{key}: rejected: {reason}", severity="error")
        self.update_views()

    @on(LayersPanel.EditRequested)
    def _edit_layers(self, msg: LayersPanel.EditRequested) -> None:
        panel = self.query_one(LayersPanel)
        for verb, names in (("freeze", msg.freeze), ("unfreeze", msg.unfreeze)):
            if not names:
                continue
            panel.pending.update(names)
            self._control(f"{verb} {' '.join(names)}", protocol.control(verb, layers=list(names)),
                          lambda r, v=verb, n=names: self._layers_reply(v, n, r),
                          lambda e, v=verb, n=names: self._layers_reply(v, n, {"type": "reject", "reason": e}))
        panel.show(self.view)

    def _layers_reply(self, verb: str, names: list[str], reply: Any) -> None:
        panel = self.query_one(LayersPanel)
        panel.pending.difference_update(names)
        if isinstance(reply, dict) and reply.get("type") == "ack":
            for x in self.view.layers:
                if x["name"] in names:
                    x["frozen"] = verb == "freeze"
            self.notify(f"{verb} {', '.join(names)}: applied at step {reply.get('step')}")
        else:
            reason = reply.get("reason") if isinstance(reply, dict) else reply
            self.notify(f"{verb}: rejected: {reason}", severity="error")
        self.view.version += 1
        self.update_views()

    def _control(self, label: str, msg: dict, then, on_error) -> None:
        sid = self.session_id
        self.app.request(label, lambda c: c.control(sid, msg), then=then, on_error=on_error)

    # -- actions
    def _verb(self, verb: str) -> None:
        self.app.request(f"{verb}", verb, self.session_id,
                         then=lambda _r: (self.notify(f"{verb}: {self.sub_title}"), self.app.poll()))

    def action_pause(self) -> None:
        self._verb("pause")

    def action_resume(self) -> None:
        self._verb("resume")

    def action_cancel(self) -> None:
        from tuneterm.tui.dialogs import Confirm

        self.app.push_screen(Confirm(f"Cancel {self.sub_title}?"), lambda ok: ok and self._verb("cancel"))

    def action_checkpoint(self) -> None:
        self._control("checkpoint", protocol.control("checkpoint"),
                      lambda r: self.notify(f"checkpoint at step {r.get('step')}" if isinstance(r, dict)
                                            and r.get("type") == "ack" else f"checkpoint: {r}"), None)

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_tab(self, by: int) -> None:
        tabs = self.query_one(TabbedContent)  # every pane, the Confusion and Samples tabs too
        ids = [p.id for p in tabs.query(TabPane) if p.id]
        i = ids.index(tabs.active) if tabs.active in ids else 0
        tabs.active = ids[(i + by) % len(ids)]

    def action_replay(self) -> None:
        from tuneterm.tui.replay_screen import ReplayScreen

        self.app.push_screen(ReplayScreen(self.session_id))

    def palette(self):
        yield "run: Pause", "Pause this run (checkpoint, then stop)", self.action_pause
        yield "run: Resume", "Resume this run", self.action_resume
        yield "run: Cancel", "Cancel this run", self.action_cancel
        yield "run: Checkpoint now", "Write a checkpoint at the next step", self.action_checkpoint
        yield "run: Replay", "Replay this run with its edits", self.action_replay
        for key in ("learning_rate", "batch_size", "epochs", "dropout", "weight_decay", "schedule", "warmup_ratio"):
            yield f"knobs: Edit {key}", knob_help(key), lambda k=key: self.post_message(KnobsPanel.EditRequested(k))
        layers = self.query_one(LayersPanel)
        yield "layers: Freeze all below", "Freeze the highlighted layer and all below it", layers.action_freeze_below
        yield "layers: Unfreeze all", "Make every layer trainable", layers.action_unfreeze_all
        yield "layers: Toggle freeze", "Freeze or unfreeze the highlighted layer", layers.action_toggle
