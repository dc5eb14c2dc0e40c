"""Data kept as tables: a ``.parquet`` file (read with pyarrow) or a folder written by
``datasets``' ``save_to_disk`` (read with ``datasets.load_from_disk``), for every task and
for `eval`/`predict`. The CSV and JSON-lines readers (data.py, lm_data.py, predict.py)
hand such a path here first; rows come back as dicts, each with a ``where`` that names the
file and the row (``data/train.parquet: row 12``) as a line number does for a text file.

Columns are checked before any row: a missing one is one line naming the file and the
column, with the columns there are. pyarrow and datasets are imported only here, only when
such a file is read (the `data` extra).
"""

from __future__ import annotations

from pathlib import Path

from tuneterm.errors import UserError
from tuneterm.session.datafiles import folder_problem, is_table  # noqa: F401  (is_table: the readers' test)


def _read(path: Path, field: str | None) -> tuple[list, list]:
    """(column names, rows as dicts) of a table."""
    if not path.exists():
        raise UserError(f"no such file {str(path)!r}", field=field)
    if path.is_dir():
        problem = folder_problem(path)
        if problem:
            raise UserError(problem, field=field)
        try:
            import datasets
        except ImportError:
            raise UserError(f"{path}: reading a datasets folder needs the datasets package "
                            "(pip install 'tuneterm[data]')", field=field) from None
        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:  # noqa: BLE001 - a damaged folder: one line
            raise UserError(f"{path}: cannot read the datasets folder: {_first(e)}", field=field) from None
        return list(ds.column_names), ds.to_list()
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{path}: reading .parquet needs pyarrow (pip install 'tuneterm[data]')", field=field) from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - pyarrow's ArrowInvalid, OSError: not a parquet file
        raise UserError(f"{path}: not a readable parquet file: {_first(e)}", field=field) from None
    return list(table.column_names), table.to_pylist()


def _first(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def need_columns(path: Path, columns: list, needed: list[tuple[str | None, str]]) -> None:
    """``needed``: (session key or None, column name) pairs; the first missing is a UserError."""
    for key, name in needed:
        if name not in columns:
            raise UserError(f"{path}: no column {name!r} (columns: {', '.join(columns) or 'none'})", field=key)


def records(path: Path, field: str | None = None) -> tuple[list, list]:
    """(columns, [(where, row)]) of a table with at least one row."""
    columns, rows = _read(path, field)
    if not rows:
        raise UserError(f"{path}: no rows", field=field)
    return columns, [(f"{path}: row {i}", r) for i, r in enumerate(rows, 1)]


def labelled(path: Path, text_field: str, label_field: str, what: str | None) -> tuple[list, list]:
    """Texts and label strings of a classification table (the CSV reader's rules: an empty
    or missing label is refused, naming the row)."""
    columns, rows = records(path, what)
    need_columns(path, columns, [("data.text_field", text_field), ("data.label_field", label_field)])
    texts, labels = [], []
    for where, r in rows:
        label = "" if r[label_field] is None else str(r[label_field]).strip()
        if not label:
            raise UserError(f"{where}: empty {label_field!r}", field=what)
        texts.append("" if r[text_field] is None else str(r[text_field]))
        labels.append(label)
    return texts, labels
