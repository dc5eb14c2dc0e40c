"""Causal-LM records from files: .jsonl, .json (an array), .csv, .parquet or a datasets
folder, checked record by record (``file:line: field: message``) into ``Record``s of one of
three formats (lm_data.py makes tokens of them).

Formats (``[data] format``; ``auto`` picks from the keys of the first record):
  text               ``text_field``: plain text.
  prompt-completion  ``prompt_field`` + ``completion_field`` (or ``prompt_template``, e.g.
                     ``"{instruction}\\n\\n{input}"`` for alpaca records).
  messages           ``messages_field``: a list of ``{role, content}`` (system | user |
                     assistant) with at least one assistant turn.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from tuneterm.engine import tables
from tuneterm.engine.data import csv_rows, json_lines
from tuneterm.errors import UserError

ROLES = ("system", "user", "assistant")


@dataclass
class Record:
    where: str  # "file:line" for messages
    fmt: str
    text: str = ""  # text format
    prompt: str = ""  # prompt-completion
    completion: str = ""
    messages: list = field(default_factory=list)



def read_records(path: Path, what: str) -> list:
    """(where, object) pairs from a .jsonl (one object a line), .json (an array of
    objects) or .csv (a header row) file; UserError with file:line on a broken line."""
    if tables.is_table(path):  # .parquet, a datasets folder
        return tables.records(path, what if what.startswith("data.") else None)[1]
    if not path.is_file():
        raise UserError(f"{what}: no such file {str(path)!r}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    out = []
    if suffix == ".csv":
        out = [(f"{path}:{line}", row) for line, row in csv_rows(io.StringIO(text, newline=""), path)]
    elif suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: not JSON: {e.msg}") from None
        if not isinstance(obj, list):
            raise UserError(f"{path}:1: expected a JSON array of records, got {type(obj).__name__}")
        lines = _record_lines(text, len(obj))
        out = [(f"{path}:{lines[i]}", r) for i, r in enumerate(obj)]
    else:
        out = [(f"{path}:{lineno}", obj) for lineno, obj in json_lines(text.splitlines(), path)]
    for where, r in out:
        if not isinstance(r, dict):
            raise UserError(f"{where}: expected an object (a record), got {type(r).__name__}")
    if not out:
        raise UserError(f"{path}: no records")
    return out


def _record_lines(text: str, n: int) -> list:
    """The line each top-level record of a JSON array starts on (for messages)."""
    dec = json.JSONDecoder()
    i = text.index("[") + 1
    lines = []
    for _ in range(n):
        while text[i] in " \t\r\n,":
            i += 1
        lines.append(text.count("\n", 0, i) + 1)
        _, i = dec.raw_decode(text, i)
    return lines


def detect_format(obj: dict, spec) -> str:
    if spec.messages_field in obj:
        return "messages"
    if spec.prompt_template or (spec.prompt_field in obj and spec.completion_field in obj):
        return "prompt-completion"
    if spec.text_field in obj:
        return "text"
    raise UserError(f"data.format: 'auto' cannot tell the format from the first record's keys "
                    f"({', '.join(map(repr, obj)) or 'none'}); expected {spec.messages_field!r}, "
                    f"{spec.prompt_field!r} + {spec.completion_field!r} or {spec.text_field!r}")


def string_field(where: str, obj: dict, key: str) -> str:
    """``obj[key]``, a non-empty string; UserError ``where: key: ...`` otherwise."""
    if key not in obj:
        raise UserError(f"{where}: {key}: missing")
    v = obj[key]
    if not isinstance(v, str):
        raise UserError(f"{where}: {key}: expected a string, got {type(v).__name__}")
    if not v.strip():
        raise UserError(f"{where}: {key}: empty")
    return v


def to_record(where: str, obj: dict, fmt: str, spec) -> Record:
    """A checked record; UserError ``file:line: field: message`` on a malformed one."""
    if fmt == "text":
        return Record(where, fmt, text=string_field(where, obj, spec.text_field))
    if fmt == "prompt-completion":
        if spec.prompt_template:
            try:
                prompt = spec.prompt_template.format_map(obj)
            except KeyError as e:
                raise UserError(f"{where}: {e.args[0]}: missing (data.prompt_template uses it)") from None
            except (ValueError, IndexError) as e:
                raise UserError(f"data.prompt_template: {e}") from None
            if not prompt.strip():
                raise UserError(f"{where}: prompt_template: gives an empty prompt")
        else:
            prompt = string_field(where, obj, spec.prompt_field)
        return Record(where, fmt, prompt=prompt, completion=string_field(where, obj, spec.completion_field))
    key = spec.messages_field
    msgs = obj.get(key)
    if key not in obj:
        raise UserError(f"{where}: {key}: missing")
    if isinstance(msgs, str):  # a CSV cell holding JSON
        try:
            msgs = json.loads(msgs)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: {key}: not JSON: {e.msg}") from None
    if not isinstance(msgs, list) or not msgs:
        raise UserError(f"{where}: {key}: expected a non-empty list of {{role, content}}")
    for i, m in enumerate(msgs):
        at = f"{where}: {key}[{i}]"
        if not isinstance(m, dict):
            raise UserError(f"{at}: expected an object {{role, content}}, got {type(m).__name__}")
        if "role" not in m:
            raise UserError(f"{at}.role: missing")
        if m["role"] not in ROLES:
            raise UserError(f"{at}.role: unknown role {m['role']!r}; one of {', '.join(ROLES)}")
        if "content" not in m:
            raise UserError(f"{at}.content: missing")
        if not isinstance(m["content"], str):
            raise UserError(f"{at}.content: expected a string, got {type(m['content']).__name__}")
        if not m["content"].strip():
            raise UserError(f"{at}.content: empty")
    if not any(m["role"] == "assistant" for m in msgs):
        raise UserError(f"{where}: {key}: no assistant turn (nothing to learn)")
    return Record(where, fmt, messages=[{"role": m["role"], "content": m["content"]} for m in msgs])


def records_from(path: Path, spec, what: str, fmt: str | None = None) -> tuple[str, list]:
    raw = read_records(path, what)
    fmt = fmt or (spec.format if spec.format != "auto" else detect_format(raw[0][1], spec))
    return fmt, [to_record(where, obj, fmt, spec) for where, obj in raw]
