"""Tables whose text cells are shown as written.

Textual's DataTable (and Rich's Table) read a ``str`` cell as console markup, so a session
name, a path, a class label or an error such as gloo's ``[/path/file.cc:78]`` would be
restyled, lose its brackets, or raise MarkupError and take the screen down. Every table
the TUI fills from a user's files or a run's output is one of these.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable


def plain(value: Any) -> Any:
    """A ``str`` as literal Text; anything else (Text, numbers, renderables) unchanged."""
    return Text(value, end="") if isinstance(value, str) else value


class PlainTable(DataTable):
    """A DataTable that never reads its cells, row labels or column labels as markup
    (``add_columns`` and ``add_rows`` go through these)."""

    def add_column(self, label: Any, *, width: int | None = None, key: str | None = None,
                   default: Any = None) -> Any:
        return super().add_column(plain(label), width=width, key=key, default=default)

    def add_row(self, *cells: Any, height: int | None = 1, key: str | None = None,
                label: Any = None) -> Any:
        return super().add_row(*map(plain, cells), height=height, key=key, label=plain(label))

    def update_cell(self, row_key: Any, column_key: Any, value: Any, *,
                    update_width: bool = False) -> None:
        super().update_cell(row_key, column_key, plain(value), update_width=update_width)

    def update_cell_at(self, coordinate: Any, value: Any, *, update_width: bool = False) -> None:
        super().update_cell_at(coordinate, plain(value), update_width=update_width)
