"""What validation reports: ``Problem`` (one finding, with file and line) and
``SessionError`` (all findings of one file; a ``UserError``, so the CLI exits 2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tuneterm.errors import UserError


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    field: str  # dotted key path (`hyperparameters.dropout`, `edits[1].set.learning_rate`)
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


class SessionError(UserError):
    """An invalid session file. ``problems`` holds every finding, sorted by line;
    ``str()`` is the first one on one line, with a count of the rest."""

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("SessionError needs at least one problem")
        self.problems = sorted(problems, key=lambda p: (p.file, p.line))
        first = str(self.problems[0])
        more = len(self.problems) - 1
        super().__init__(first + (f" (and {more} more)" if more else ""))
