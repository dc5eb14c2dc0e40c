"""A new session file from a form: pre-filled with the chosen model's defaults, checked
exactly as `tuneterm validate` checks a file, saved to sessions/NAME.toml."""

from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static, Switch

from tuneterm.session import schema
from tuneterm.workspace import sessions_dir

# Sensible starting points per built-in model (DESIGN: start from the model's defaults,
# start small). Keys are (section, key).
MODEL_DEFAULTS: dict[str, dict[tuple[str, str], Any]] = {
    "builtin:minilm-l6": {("hyperparameters", "learning_rate"): 5e-5, ("hyperparameters", "batch_size"): 16,
                          ("hyperparameters", "epochs"): 3.0, ("hyperparameters", "dropout"): 0.1,
                          ("hyperparameters", "warmup_ratio"): 0.1, ("data", "max_samples"): 800},
    "builtin:tiny-bert": {("hyperparameters", "learning_rate"): 1e-3, ("hyperparameters", "batch_size"): 16,
                          ("hyperparameters", "epochs"): 1.0, ("hyperparameters", "dropout"): 0.1,
                          ("hyperparameters", "warmup_ratio"): 0.1, ("data", "max_samples"): 256},
}
for _m in ("builtin:tiny-gpt2", "builtin:tiny-llama"):
    MODEL_DEFAULTS[_m] = dict(MODEL_DEFAULTS["builtin:tiny-bert"])

# (section, key, label); the widget follows the field's type and metadata.
FORM = (
    ("session", "name", "name"),
    ("model", "source", "model"),
    ("data", "source", "data"),
    ("data", "max_samples", "max samples"),
    ("hyperparameters", "learning_rate", "learning rate"),
    ("hyperparameters", "batch_size", "batch size"),
    ("hyperparameters", "epochs", "epochs"),
    ("hyperparameters", "max_steps", "max steps"),
    ("hyperparameters", "dropout", "dropout"),
    ("hyperparameters", "weight_decay", "weight decay"),
    ("hyperparameters", "schedule", "schedule"),
    ("hyperparameters", "warmup_ratio", "warmup ratio"),
    ("freeze", "layers", "frozen layers"),
    ("early_stopping", "enabled", "early stopping"),
    ("early_stopping", "patience", "patience"),
)


def field_of(section: str, key: str) -> dataclasses.Field:
    return next(f for f in dataclasses.fields(schema.SECTIONS[section]) if f.name == key)


def default_of(section: str, key: str) -> Any:
    return getattr(schema.SECTIONS[section](), key)


def wid(section: str, key: str) -> str:
    return f"f-{section}-{key}"


class NewSessionScreen(Screen):
    """Dismisses with (path, queue?) once saved, or None."""

    BINDINGS = [
        Binding("escape", "cancel", "Back", id="new.cancel"),
        Binding("ctrl+s", "save(False)", "Save", id="new.save"),
        Binding("ctrl+y", "save(True)", "Save & queue", id="new.save_queue"),
    ]
    HELP = ("A new session file. Values are checked as `tuneterm validate` checks them; "
            "the file lands in sessions/. Choosing a model fills in its defaults.")

    def __init__(self, initial: dict | None = None, duplicate_of: str | None = None) -> None:
        super().__init__()
        self.raw: dict = copy.deepcopy(initial or {})
        self.raw.pop("edits", None)
        name = self.get("session", "name")
        if duplicate_of or not initial:
            name = f"{duplicate_of or name or 'session'}-2" if duplicate_of else "my-session"
        self.raw.setdefault("session", {})["name"] = name
        if not initial:
            model = "builtin:minilm-l6"
            self.raw.setdefault("model", {})["source"] = model
            for (sec, key), v in MODEL_DEFAULTS[model].items():
                self.raw.setdefault(sec, {})[key] = v
        self._loading = True

    def get(self, section: str, key: str) -> Any:
        return self.raw.get(section, {}).get(key, default_of(section, key))

    def compose(self) -> ComposeResult:
        yield Header(icon="≈")
        with VerticalScroll(id="form"):
            for section, key, label in FORM:
                f = field_of(section, key)
                value = self.get(section, key)
                with Horizontal(classes="form-row"):
                    yield Label(label, classes="form-label")
                    if key == "source" and section == "model":
                        options = list(schema.BUILTIN_MODELS)
                        if value not in options:
                            options.append(value)
                        yield Select([(o, o) for o in options], value=value, allow_blank=False, id=wid(section, key))
                    elif "choices" in f.metadata:
                        yield Select([(str(c), c) for c in f.metadata["choices"]], value=value,
                                     allow_blank=False, id=wid(section, key))
                    elif isinstance(value, bool):
                        yield Switch(value=value, id=wid(section, key))
                    else:
                        text = " ".join(value) if isinstance(value, list) else str(value)
                        yield Input(text, id=wid(section, key), tooltip=f.metadata.get("help"))
                    yield Static(str(f.metadata.get("help", "")), classes="form-help")
            yield Static("", id="form-problems")
            with Horizontal(id="form-buttons"):
                yield Button("Save", id="save", variant="primary")
                yield Button("Save & queue", id="save-queue", variant="success")
                yield Button("Cancel", id="cancel")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.call_after_refresh(setattr, self, "_loading", False)

    @on(Select.Changed, "#f-model-source")
    def _model_changed(self, event: Select.Changed) -> None:
        if self._loading:
            return
        for (sec, key), v in MODEL_DEFAULTS.get(str(event.value), {}).items():
            w = self.query_one(f"#{wid(sec, key)}")
            if isinstance(w, Input):
                w.value = str(v)

    def collect(self) -> tuple[dict, list[str]]:
        raw = copy.deepcopy(self.raw)
        problems = []
        for section, key, label in FORM:
            w = self.query_one(f"#{wid(section, key)}")
            f = field_of(section, key)
            kind = str(f.type).split("[")[0]
            if isinstance(w, (Select, Switch)):
                value = w.value
            else:
                text = w.value.strip()
                try:
                    if kind == "int":
                        value = int(text.replace("_", ""))
                    elif kind == "float":
                        value = float(text)
                    elif kind == "list":
                        value = [x for x in re.split(r"[\s,]+", text) if x]
                    else:
                        value = text
                except ValueError:
                    problems.append(f"{section}.{key}: expected {'an integer' if kind == 'int' else 'a number'}, "
                                    f"got {text!r}")
                    continue
            raw.setdefault(section, {})[key] = value
        return raw, problems

    def check(self) -> tuple[Any, list[str], Path]:
        """(session or None, problems, target path) — the checks of `tuneterm validate`."""
        from tuneterm.session.io import build_session, check_session_text, dumps_session

        raw, problems = self.collect()
        ws = self.app.workspace
        name = str(raw.get("session", {}).get("name", ""))
        path = sessions_dir(ws) / f"{name}.toml"
        if problems:
            return None, problems, path
        session, found = build_session(raw, ws)
        if found:
            return None, [f"{p}: {m}" for p, m in found], path
        checked, file_problems = check_session_text(dumps_session(session), f"sessions/{name}.toml", ws)
        if file_problems:
            return None, [str(p) for p in file_problems], path
        if path.exists():
            return None, [f"sessions/{path.name} exists already: choose another name"], path
        return checked, [], path

    def action_save(self, queue: bool) -> None:
        from tuneterm.session.io import save_session

        session, problems, path = self.check()
        box = self.query_one("#form-problems", Static)
        if problems:
            box.update("\n".join(f"✗ {p}" for p in problems))
            box.add_class("problem")
            self.notify(problems[0], severity="error")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        save_session(session, path)
        self.notify(f"saved sessions/{path.name}")
        self.dismiss((path, queue))

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.action_cancel()
        else:
            self.action_save(event.button.id == "save-queue")

    def action_cancel(self) -> None:
        self.dismiss(None)
