"""Line numbers for dotted key paths in a TOML text.

TOML parsers return values without positions, but a validation message has to name the
line of the offending key. ``Locator`` scans the text once — table headers ``[a.b]``,
array-of-tables headers ``[[edits]]``, ``key = value`` lines, dotted keys and inline
tables — and records the line where each key path starts::

    hyperparameters.learning_rate      the `learning_rate = ...` line under [hyperparameters]
    edits[2]                           the third `[[edits]]` header
    edits[2].set.learning_rate         `learning_rate` in `set = { ... }` of that entry

Strings (all four kinds, multi-line included), comments and multi-line arrays are
skipped, so a ``=`` inside them is never mistaken for a key. The scanner is forgiving: on
text that is not valid TOML it records what it can (the parser reports syntax errors).
"""

from __future__ import annotations

import re

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_INDEX = re.compile(r"\[(\d+)\]")


class Locator:
    def __init__(self, text: str) -> None:
        self.text = text
        self.lines: dict[str, int] = {}
        self._arrays: dict[str, int] = {}  # array-of-tables path -> index of its last entry
        try:
            self._scan()
        except (IndexError, RecursionError):  # truncated or absurdly nested: keep what we have
            pass

    # -- lookup -------------------------------------------------------------------------

    def line(self, path: str) -> int:
        """The line of ``path``, else of its nearest enclosing key or table, else 1."""
        p = path
        while p:
            if p in self.lines:
                return self.lines[p]
            if p.endswith("]"):
                # edits[2] -> edits (an inline array of tables has no per-entry headers)
                p = p[: p.rindex("[")]
            elif "." in p:
                p = p.rsplit(".", 1)[0]
            else:
                break
        return 1

    # -- scanning -----------------------------------------------------------------------

    def _scan(self) -> None:
        t = self.text
        self.i, self.n, self.lineno = 0, len(t), 1
        table = ""
        while self.i < self.n:
            self._skip_ws_comments_newlines()
            if self.i >= self.n:
                break
            c = t[self.i]
            if c == "[":
                is_array = t.startswith("[[", self.i)
                self.i += 2 if is_array else 1
                line = self.lineno
                keys = self._read_key()
                self._skip_to_eol()
                if is_array:
                    parent = self._resolve(keys[:-1])
                    last = keys[-1] if keys else ""
                    path = f"{parent}.{last}" if parent else last
                    idx = self._arrays.get(path, -1) + 1
                    self._arrays[path] = idx
                    self._record(path, line)
                    table = f"{path}[{idx}]"
                else:
                    table = self._resolve(keys)
                self._record(table, line)
            else:
                self._keyval(table)
                self._skip_to_eol()

    def _record(self, path: str, line: int) -> None:
        self.lines.setdefault(path, line)

    def _resolve(self, keys: list[str]) -> str:
        """Join header keys, entering the last entry of any array of tables on the way."""
        path = ""
        for k in keys:
            path = f"{path}.{k}" if path else k
            if path in self._arrays:
                path = f"{path}[{self._arrays[path]}]"
        return path

    def _keyval(self, prefix: str) -> None:
        line = self.lineno
        keys = self._read_key()
        if not keys:
            self.i += 1  # not a key: skip the character, the parser will complain
            return
        path = ".".join([prefix, *keys]) if prefix else ".".join(keys)
        # Every dotted prefix (a.b.c = 1 defines a and a.b) lives on this line too.
        for j in range(1, len(keys) + 1):
            self._record(".".join([prefix, *keys[:j]]) if prefix else ".".join(keys[:j]), line)
        self._skip_inline_ws()
        if self.i < self.n and self.text[self.i] == "=":
            self.i += 1
            self._skip_inline_ws()
            self._value(path)

    def _read_key(self) -> list[str]:
        t = self.text
        keys: list[str] = []
        while self.i < self.n:
            self._skip_inline_ws()
            if self.i >= self.n:
                break
            c = t[self.i]
            if c in "\"'":
                keys.append(self._string())
            else:
                m = _BARE.match(t, self.i)
                if not m:
                    break
                keys.append(m.group())
                self.i = m.end()
            self._skip_inline_ws()
            if self.i < self.n and t[self.i] == ".":
                self.i += 1
                continue
            break
        # Closing brackets of a header.
        while self.i < self.n and t[self.i] == "]":
            self.i += 1
        return keys

    def _value(self, path: str) -> None:
        t = self.text
        if self.i >= self.n:
            return
        c = t[self.i]
        if c in "\"'":
            self._string()
        elif c == "[":
            self.i += 1
            k = 0
            while self.i < self.n:
                self._skip_ws_comments_newlines()
                if self.i >= self.n or t[self.i] == "]":
                    self.i += 1
                    return
                if t[self.i] == ",":
                    self.i += 1
                    continue
                self._record(f"{path}[{k}]", self.lineno)
                start = self.i
                self._value(f"{path}[{k}]")
                k += 1
                if self.i == start:
                    self.i += 1
        elif c == "{":
            self.i += 1
            while self.i < self.n:
                self._skip_inline_ws()
                if self.i >= self.n or t[self.i] == "\n":
                    return  # unterminated inline table: the parser will say so
                if t[self.i] == "}":
                    self.i += 1
                    return
                if t[self.i] == ",":
                    self.i += 1
                    continue
                start = self.i
                self._keyval(path)
                if self.i == start:
                    self.i += 1
        else:
            # A number, bool or date: up to the next delimiter.
            while self.i < self.n and t[self.i] not in ",]}#\n":
                self.i += 1

    def _string(self) -> str:
        t = self.text
        q = t[self.i]
        if t.startswith(q * 3, self.i):
            end = t.find(q * 3, self.i + 3)
            end = self.n if end < 0 else end + 3
            while end < self.n and t[end] == q:  # up to two quotes may close the content
                end += 1
            s = t[self.i + 3 : end - 3]
            self.lineno += t.count("\n", self.i, end)
            self.i = end
            return s
        j = self.i + 1
        while j < self.n and t[j] != q and t[j] != "\n":
            j += 2 if (q == '"' and t[j] == "\\") else 1
        s = t[self.i + 1 : j]
        self.i = min(j + 1, self.n) if j < self.n and t[j] == q else j
        return s

    def _skip_inline_ws(self) -> None:
        while self.i < self.n and self.text[self.i] in " \t\r":
            self.i += 1

    def _skip_ws_comments_newlines(self) -> None:
        t = self.text
        while self.i < self.n:
            c = t[self.i]
            if c in " \t\r":
                self.i += 1
            elif c == "\n":
                self.i += 1
                self.lineno += 1
            elif c == "#":
                while self.i < self.n and t[self.i] != "\n":
                    self.i += 1
            else:
                break

    def _skip_to_eol(self) -> None:
        """Skip the rest of a line (a trailing comment, or junk the parser will report)."""
        t = self.text
        while self.i < self.n and t[self.i] != "\n":
            if t[self.i] in "\"'":
                self._string()
            else:
                self.i += 1


__all__ = ["Locator"]
