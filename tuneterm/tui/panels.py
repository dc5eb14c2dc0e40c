"""The session screen's panels: live knobs, layer freezing, the timeline."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from tuneterm.states import SessionState
from tuneterm.tui.data import KNOBS, RunView, fmt_best, fmt_eta, fmt_num, fmt_params
from tuneterm.tui.knobs import knob_help
from tuneterm.tui.plain import PlainTable

class NavTable(PlainTable):
    """A row table that also moves with j/k."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", id="table.down", show=False),
        Binding("k", "cursor_up", "Up", id="table.up", show=False),
    ]


TIMELINE_STYLE = {"edit": "cyan", "reject": "red", "checkpoint": "blue", "best": "green",
                  "eval": "", "early stop": "bold yellow", "error": "bold red", "end": "bold",
                  "start": "dim"}


class KnobsPanel(Vertical):
    """The hyperparameters that a run accepts live, with the fate of the last edit."""

    BINDINGS = [Binding("e", "edit", "Edit knob", id="knobs.edit")]

    class EditRequested(Message):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.edit_status: dict[str, tuple[str, str]] = {}  # key -> (text, style)
        self._shown: dict[str, tuple] = {}

    def compose(self) -> ComposeResult:
        table = NavTable(id="knobs-table", cursor_type="row")
        table.add_column("knob", key="knob", width=14)
        table.add_column("value", key="value", width=10)
        table.add_column("last edit", key="status")
        for k in KNOBS:
            table.add_row(k, "–", "", key=k)
        yield table
        yield Static(knob_help(KNOBS[0]), id="knob-help")

    def show(self, view: RunView) -> None:
        table = self.query_one(DataTable)
        for k in view.knob_keys:
            if k not in self._rows():  # a LoRA run's knobs, once its session is read
                table.add_row(k, "–", "", key=k)
            text, style = self.edit_status.get(k, ("", ""))
            row = (fmt_num(view.knobs.get(k)), text, style)
            if self._shown.get(k) != row:
                table.update_cell(k, "value", row[0])
                table.update_cell(k, "status", Text(text, style=style), update_width=True)
                self._shown[k] = row

    def set_status(self, key: str, text: str, style: str = "") -> None:
        self.edit_status[key] = (text, style)

    @on(DataTable.RowHighlighted)
    def _highlight(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value:
            self.query_one("#knob-help", Static).update(knob_help(event.row_key.value))

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.post_message(self.EditRequested(str(event.row_key.value)))

    def _rows(self) -> list[str]:
        return [str(k.value) for k in self.query_one(DataTable).rows]

    def action_edit(self) -> None:
        table = self.query_one(DataTable)
        self.post_message(self.EditRequested(self._rows()[table.cursor_row]))


def layer_state(x: dict, train_base) -> tuple[str, int, int]:
    """(what of the group trains, its shown size, its trainable parameters) from a
    layers.json row; with LoRA the size is the adapters' and the live ``train_base`` (a
    list, or None before any edit) says whether the base trains beside them."""
    if "adapter_params" not in x:
        return ("frozen", x["params"], 0) if x["frozen"] else ("trainable", x["params"], x["params"])
    base = x["name"] in train_base if isinstance(train_base, list) else x.get("train_base", False)
    if x["frozen"]:
        return "frozen", x["adapter_params"], 0
    if base:
        return f"adapters + base {fmt_params(x['base_params'])}", x["adapter_params"], x["params"]
    what = "adapters" if x["adapter_params"] else "no adapters"
    return f"{what} · base {fmt_params(x['base_params'])} frozen", x["adapter_params"], x["adapter_params"]


class LayersPanel(Vertical):
    """Every layer group with its size and a freeze toggle (bottom of the model first)."""

    BINDINGS = [
        Binding("space", "toggle", "Freeze/unfreeze", id="layers.toggle"),
        Binding("b", "freeze_below", "Freeze all below", id="layers.freeze_below"),
        Binding("u", "unfreeze_all", "Unfreeze all", id="layers.unfreeze_all"),
    ]

    class EditRequested(Message):
        def __init__(self, freeze: list[str], unfreeze: list[str]) -> None:
            super().__init__()
            self.freeze = freeze
            self.unfreeze = unfreeze

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.pending: set[str] = set()
        self.groups: list[dict] = []
        self._shown: list[tuple] = []

    def compose(self) -> ComposeResult:
        table = NavTable(id="layers-table", cursor_type="row")
        table.add_column("", key="mark", width=3)
        table.add_column("layer", key="name", width=18)
        table.add_column("params", key="params", width=8)
        table.add_column("", key="state")
        yield table
        yield Static("layers appear when the run starts", id="trainable")

    def show(self, view: RunView) -> None:
        self.groups = view.layers
        states = [layer_state(x, view.knobs.get("train_base")) for x in view.layers]
        rows = [("…" if x["name"] in self.pending else ("■" if x["frozen"] else "□"),
                 x["name"], fmt_params(size), what) for x, (what, size, _) in zip(view.layers, states)]
        if rows == self._shown:
            return
        table = self.query_one(DataTable)
        if [r[1] for r in rows] != [r[1] for r in self._shown]:
            cursor = table.cursor_row
            table.clear()
            for r in rows:
                table.add_row(r[0], r[1], Text(r[2], justify="right"),
                              Text(r[3], style="dim" if r[3] == "frozen" else "green"), key=r[1])
            if rows:
                table.move_cursor(row=min(cursor, len(rows) - 1), animate=False)
        else:
            for r, old in zip(rows, self._shown):
                if r != old:
                    table.update_cell(r[1], "mark", r[0])
                    table.update_cell(r[1], "state", Text(r[3], style="dim" if r[3] == "frozen" else "green"))
        self._shown = rows
        trainable, total = sum(n for *_, n in states), sum(x["params"] for x in view.layers)
        if total:
            self.query_one("#trainable", Static).update(
                f"trainable {fmt_params(trainable)} of {fmt_params(total)} parameters "
                f"({100.0 * trainable / total:.1f}%)")

    def _cursor_layer(self) -> int | None:
        table = self.query_one(DataTable)
        if not self.groups or not (0 <= table.cursor_row < len(self.groups)):
            return None
        return table.cursor_row

    def action_toggle(self) -> None:
        i = self._cursor_layer()
        if i is None:
            return
        layer = self.groups[i]
        if layer["frozen"]:
            self.post_message(self.EditRequested([], [layer["name"]]))
        else:
            self.post_message(self.EditRequested([layer["name"]], []))

    def action_freeze_below(self) -> None:
        """Freeze this layer group and every one below it (nearer the embeddings)."""
        i = self._cursor_layer()
        if i is None:
            return
        names = [x["name"] for x in self.groups[: i + 1] if not x["frozen"]]
        if names:
            self.post_message(self.EditRequested(names, []))
        else:
            self.notify("already frozen")

    def action_unfreeze_all(self) -> None:
        names = [x["name"] for x in self.groups if x["frozen"]]
        if names:
            self.post_message(self.EditRequested([], names))
        else:
            self.notify("nothing is frozen")

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_toggle()


class TimelinePanel(Vertical):
    """Edits, rejections, checkpoints, evaluations, early stopping, in step order."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self._count = 0

    def compose(self) -> ComposeResult:
        table = NavTable(id="timeline-table", cursor_type="row")
        table.add_column("step", key="step", width=7)
        table.add_column("what", key="what", width=10)
        table.add_column("detail", key="detail")
        yield table

    def show(self, view: RunView) -> None:
        entries = view.timeline
        if len(entries) == self._count:
            return
        table = self.query_one(DataTable)
        at_end = table.cursor_row >= table.row_count - 1
        if len(entries) < self._count:
            table.clear()
            self._count = 0
        for e in entries[self._count:]:
            # e.text as written (a PlainTable): gloo's "[/path/file.cc:78]" is not markup
            table.add_row(Text(str(e.step), justify="right"), Text(e.kind, style=TIMELINE_STYLE.get(e.kind, "")),
                          e.text)
        self._count = len(entries)
        if at_end and table.row_count:
            table.move_cursor(row=table.row_count - 1, animate=False)


def status_line(v: RunView, s: dict, width: int) -> Text:
    """The session screen's one-line header: name · state · step/total · epoch · loss · best
    · ETA · error, fitted to ``width`` (a narrow screen drops best, then epoch)."""
    state = s.get("state") or v.state
    step = max(v.step, s.get("step") or 0)
    total = s.get("total_steps")
    parts = [Text(str(s.get("name", "")), style="bold"), Text(str(state), style="green" if state == SessionState.RUNNING else "")]
    parts.append(Text(f"step {step}/{total}" if total else f"step {step}"))
    epoch = v.epoch if v.epoch is not None else s.get("epoch")
    if epoch is not None:
        parts.append(Text(f"epoch {fmt_num(epoch, 3)}"))
    loss = v.last_loss if v.last_loss is not None else s.get("loss")
    if loss is not None:
        parts.append(Text(f"loss {fmt_num(loss)}"))
    if s.get("best_metric"):
        parts.append(Text(f"best {fmt_best(s['best_metric'])}"))
    if state == SessionState.RUNNING and fmt_eta(s.get("eta_s")):
        parts.append(Text(f"ETA {fmt_eta(s.get('eta_s'))}"))
    if s.get("error"):
        parts.append(Text(str(s["error"]), style="red"))
    optional = [i for i, p in enumerate(parts) if p.plain.startswith(("best ", "epoch "))]
    while optional and sum(len(p) + 3 for p in parts) - 3 > width:
        parts.pop(optional.pop())  # the narrow screen drops best, then epoch
    text = Text(" · ").join(parts)
    text.truncate(width, overflow="ellipsis")
    return text
