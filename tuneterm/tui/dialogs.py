"""Small modal dialogs: confirm, pick a session file, pick one of a list, edit one value."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from tuneterm.workspace import sessions_dir


class Confirm(ModalScreen[bool]):
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__(classes="dialog")
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Static(self.question, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class PickSession(ModalScreen):
    """A session file from sessions/ (returns its Path), or "new"."""

    BINDINGS = [Binding("escape", "cancel", "Back", id="pick.cancel")]

    def __init__(self, workspace: Path, title: str = "Queue a session") -> None:
        super().__init__(classes="dialog")
        self.workspace = workspace
        self.title_text = title
        self.files = sorted(sessions_dir(workspace).glob("*.toml"))

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title")
            options = [Option(f"sessions/{p.name}", id=str(i)) for i, p in enumerate(self.files)]
            options.append(Option("+ new session from a template…", id="new"))
            yield OptionList(*options, id="pick-list")
            yield Static("enter: choose · escape: back", classes="dialog-hint")

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        oid = event.option.id
        self.dismiss("new" if oid == "new" else self.files[int(oid)])

    def action_cancel(self) -> None:
        self.dismiss(None)


class PickOne(ModalScreen):
    """One of ``choices`` (returns it), or None on escape."""

    BINDINGS = [Binding("escape", "cancel", "Back", id="pickone.cancel")]

    def __init__(self, title: str, choices: list[str]) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.choices = list(choices)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title")
            yield OptionList(*[Option(c, id=str(i)) for i, c in enumerate(self.choices)], id="pickone-list")
            yield Static("enter: choose · escape: back", classes="dialog-hint")

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.choices[int(event.option.id)])

    def action_cancel(self) -> None:
        self.dismiss(None)


class EditValue(ModalScreen):
    """One value, checked by ``check(text) -> (value, problem)`` before it is returned."""

    BINDINGS = [Binding("escape", "cancel", "Back", id="edit.cancel")]

    def __init__(self, key: str, current: Any, help_text: str,
                 check: Callable[[str], tuple[Any, str | None]]) -> None:
        super().__init__(classes="dialog")
        self.key = key
        self.current = current
        self.help_text = help_text
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(f"Set {self.key} (live)", classes="dialog-title")
            yield Static(self.help_text, classes="dialog-text")
            yield Input(value="" if self.current is None else str(self.current), id="edit-input")
            yield Static("", id="edit-problem", classes="problem")
            yield Static("enter: send to the run · escape: back", classes="dialog-hint")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        value, problem = self.check(event.value)
        if problem:
            self.query_one("#edit-problem", Static).update(problem)
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
