"""Versioned JSON-lines messages between clients, the runner daemon and workers.

No torch, no textual: every process speaks this module. One message is one JSON object on
one line, always carrying ``"v"`` (the protocol version; a message without it is refused)
and ``"type"``. Each boundary decodes a line once, here, into a typed message:

- ``decode(line)``: the envelope — UTF-8 JSON object, ``v`` and ``type`` present, and every
  value within bounds (integers within ±2^63, finite numbers, no NUL character, at most
  ``MAX_DEPTH`` levels of nesting). Anything else is a ``ProtocolError`` (a ``user`` error
  on the socket), never a closed connection.
- ``Command.parse(msg)``: a control message (client -> daemon -> worker, or a ``--control``
  file -> ``tuneterm run``)::

    {"v": 1, "type": "set", "id": "c1", "values": {"learning_rate": 2e-5}}
    {"v": 1, "type": "freeze", "id": "c2", "layers": ["embeddings", "layer.0"]}
    {"v": 1, "type": "unfreeze", "id": "c3", "layers": ["layer.0"]}
    {"v": 1, "type": "checkpoint", "id": "c4"}
    {"v": 1, "type": "pause", "id": "c5"}     # checkpoint, then exit (resumable)
    {"v": 1, "type": "stop", "id": "c6"}      # checkpoint, then finish as stopped

  The worker answers each with exactly one of::

    {"v": 1, "type": "ack", "id": "c1", "step": 120}            # applied after `step` steps
    {"v": 1, "type": "reject", "id": "c1", "reason": "..."}      # nothing changed

  and streams what it writes to the run directory::

    {"v": 1, "type": "metric", "data": {...one metrics.jsonl row...}}
    {"v": 1, "type": "event", "data": {...one events.jsonl row...}}

- ``Request.parse(msg)``: a daemon request (``hello``, ``status``, ``list``, ``get``, ``add``,
  ``pause``/``resume``/``cancel``/``retry``, ``move``, ``control``, ``subscribe``,
  ``shutdown``), each field checked for its type.

The values of an edit (ranges, layer names) are checked by the engine, which knows the
model and the session. The full protocol is documented in docs/protocol.md.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

VERSION = 1

CONTROL_TYPES = ("set", "freeze", "unfreeze", "checkpoint", "pause", "stop")
MAX_DEPTH = 32
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MAX_STRING = 1 << 16


class ProtocolError(ValueError):
    """A message that cannot be parsed or has the wrong shape (a ``user`` error)."""


def new_id() -> str:
    return uuid.uuid4().hex[:12]


# -- the envelope -----------------------------------------------------------------------------


def encode(msg: dict) -> bytes:
    """One message as one UTF-8 JSON line (with the version added when missing)."""
    if "v" not in msg:
        msg = {"v": VERSION, **msg}
    return (json.dumps(msg, separators=(",", ":"), allow_nan=False) + "\n").encode()


def decode(line: bytes | str) -> dict:
    """Parse one line; raise ProtocolError on anything that is not a sound v1 message."""
    if isinstance(line, bytes):
        try:
            line = line.decode()
        except UnicodeDecodeError as e:
            raise ProtocolError(f"not UTF-8: {e}") from None
    try:
        msg = json.loads(line, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"not JSON: {e.msg} at column {e.colno}") from None
    except RecursionError:
        raise ProtocolError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # an integer of more digits than Python converts (4300)
        raise ProtocolError("an integer beyond ±2^63 is out of range") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a JSON object")
    if "v" not in msg:
        raise ProtocolError(f"message has no 'v' (the protocol version; this side speaks {VERSION})")
    v = msg["v"]
    if type(v) is not int or v != VERSION:
        raise ProtocolError(f"unsupported protocol version {v!r} (this side speaks {VERSION})")
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("message has no 'type'")
    check_values(msg)
    return msg


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not allowed in messages")


def check_values(x: Any, where: str = "", depth: int = 0) -> None:
    """Every value of a decoded message within bounds; names the field at fault."""
    if depth > MAX_DEPTH:
        raise ProtocolError(f"nested deeper than {MAX_DEPTH} levels")
    at = f"{where}: " if where else ""
    if isinstance(x, bool) or x is None:
        return
    if isinstance(x, int):
        if not INT_MIN <= x <= INT_MAX:
            raise ProtocolError(f"{at}an integer beyond ±2^63 is out of range")
    elif isinstance(x, float):
        if not math.isfinite(x):
            raise ProtocolError(f"{at}{x} is not a finite number")
    elif isinstance(x, str):
        if "\x00" in x:
            raise ProtocolError(f"{at}a NUL character is not allowed")
        if len(x) > MAX_STRING:
            raise ProtocolError(f"{at}a string is at most {MAX_STRING} characters")
    elif isinstance(x, dict):
        for k, val in x.items():
            check_values(k, where, depth + 1)
            check_values(val, f"{where}.{k}" if where else str(k), depth + 1)
    elif isinstance(x, list):
        for val in x:
            check_values(val, where, depth + 1)


# -- field checks -----------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _opt_int(msg: dict, key: str, what: str, lo: int | None = None) -> int | None:
    x = msg.get(key)
    if x is None:
        return None
    if not _is_int(x) or (lo is not None and x < lo):
        raise ProtocolError(f"{what}: '{key}' must be an integer" + (f" >= {lo}" if lo is not None else ""))
    return x


def _bool(msg: dict, key: str, what: str, default: bool) -> bool:
    x = msg.get(key, default)
    if x is None:
        return default
    if not isinstance(x, bool):
        raise ProtocolError(f"{what}: '{key}' must be true or false")
    return x


def _id(msg: dict, what: str) -> str | int | None:
    x = msg.get("id")
    if x is None or isinstance(x, str) or _is_int(x):
        return x
    raise ProtocolError(f"{what}: 'id' must be a string")


def _ref(msg: dict, what: str) -> str | int:
    x = msg.get("ref")
    if _is_int(x) and x >= 0:
        return x
    if isinstance(x, str) and x.strip():
        return x
    if x is None or x == "":
        raise ProtocolError(f"{what}: no session given ('ref')")
    raise ProtocolError(f"{what}: 'ref' must be a session id, a run id or a run id prefix (got {json.dumps(x)[:40]})")


# -- control messages (commands) --------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One control message, checked for its shape."""

    type: str                        # one of CONTROL_TYPES
    id: str | int | None = None
    values: dict = field(default_factory=dict)   # set
    layers: tuple[str, ...] = ()                 # freeze, unfreeze
    at_step: int | None = None                   # a --control script: hold until N steps are done

    @classmethod
    def parse(cls, msg: dict) -> "Command":
        if not isinstance(msg, dict):
            raise ProtocolError("a control message must be an object")
        t = msg.get("type")
        if t not in CONTROL_TYPES:
            raise ProtocolError(f"unknown control type {t!r}; expected one of {', '.join(CONTROL_TYPES)}")
        check_values(msg)
        values: dict = {}
        layers: tuple[str, ...] = ()
        if t == "set":
            values = msg.get("values")
            if not isinstance(values, dict) or not values:
                raise ProtocolError("set: 'values' must be a non-empty object")
            for k, val in values.items():
                # a list only of layer names (train_base, LoRA): the session check does the rest
                if isinstance(val, dict) or (isinstance(val, list) and not all(isinstance(x, str) for x in val)):
                    raise ProtocolError(f"set: {k}: a knob's value is a number, a string or a list of layer names")
        if t in ("freeze", "unfreeze"):
            raw = msg.get("layers")
            if not isinstance(raw, list) or not raw or not all(isinstance(x, str) and x for x in raw):
                raise ProtocolError(f"{t}: 'layers' must be a non-empty list of layer names")
            layers = tuple(raw)
        return cls(t, _id(msg, t), dict(values), layers, _opt_int(msg, "at_step", t, lo=0))

    def to_dict(self) -> dict:
        out: dict = {"v": VERSION, "type": self.type, "id": self.id}
        if self.type == "set":
            out["values"] = dict(self.values)
        if self.type in ("freeze", "unfreeze"):
            out["layers"] = list(self.layers)
        if self.at_step is not None:
            out["at_step"] = self.at_step
        return out


def control(type_: str, **fields: Any) -> dict:
    """Build a control message with a fresh id (checked: a bad one raises ProtocolError)."""
    if type_ not in CONTROL_TYPES:
        raise ProtocolError(f"unknown control type {type_!r}; expected one of {', '.join(CONTROL_TYPES)}")
    msg = {"v": VERSION, "type": type_, "id": fields.pop("id", None) or new_id(), **fields}
    Command.parse(msg)
    return msg


# -- worker -> daemon -------------------------------------------------------------------------


def ack(msg_id: str | int | None, step: int, **extra: Any) -> dict:
    return {"v": VERSION, "type": "ack", "id": msg_id, "step": step, **extra}


def reject(msg_id: str | int | None, reason: str) -> dict:
    return {"v": VERSION, "type": "reject", "id": msg_id, "reason": reason}


def metric(row: dict) -> dict:
    return {"v": VERSION, "type": "metric", "data": row}


def event(row: dict) -> dict:
    return {"v": VERSION, "type": "event", "data": row}


# -- daemon requests --------------------------------------------------------------------------

REQUEST_TYPES = ("hello", "status", "list", "get", "add", "pause", "resume", "cancel", "retry", "move",
                 "control", "subscribe", "shutdown")
_NEEDS_REF = ("get", "pause", "resume", "cancel", "retry", "move", "control", "subscribe")
DEFAULT_WAIT, MAX_WAIT = 30.0, 3600.0


@dataclass(frozen=True)
class Request:
    """One request to the daemon, every field checked for its type (docs/protocol.md)."""

    type: str
    id: str | int | None = None
    ref: str | int | None = None           # get, pause, resume, cancel, retry, move, control, subscribe
    path: str | None = None                # add
    smoke: bool = False                    # add
    check: bool = True                     # add
    key: str | None = None                 # add: idempotency key
    to: int | None = None                  # move
    by: int | None = None                  # move
    command: Command | None = None         # control ("msg")
    wait: float = DEFAULT_WAIT             # control
    history: bool = True                   # subscribe

    @classmethod
    def parse(cls, msg: dict) -> "Request":
        t = msg.get("type")
        if t not in REQUEST_TYPES:
            raise ProtocolError(f"unknown request {t!r}")
        check_values(msg)
        f: dict = {"type": t, "id": _id(msg, t)}
        if t in _NEEDS_REF:
            f["ref"] = _ref(msg, t)
        if t == "add":
            if not isinstance(msg.get("path"), str) or not msg["path"]:
                raise ProtocolError("add: 'path' must be a string")
            key = msg.get("key")
            if key is not None and not isinstance(key, str):
                raise ProtocolError("add: 'key' must be a string")
            f.update(path=msg["path"], smoke=_bool(msg, "smoke", t, False), check=_bool(msg, "check", t, True), key=key)
        elif t == "move":
            f.update(to=_opt_int(msg, "to", t), by=_opt_int(msg, "by", t))
            if (f["to"] is None) == (f["by"] is None):
                raise ProtocolError("move: give exactly one of 'to' or 'by'")
        elif t == "control":
            if not isinstance(msg.get("msg"), dict):
                raise ProtocolError("control: 'msg' must be a control message object")
            f["command"] = Command.parse(msg["msg"])
            wait = msg.get("wait", DEFAULT_WAIT)
            if isinstance(wait, bool) or not isinstance(wait, (int, float)):
                raise ProtocolError("control: 'wait' must be a number of seconds")
            f["wait"] = float(wait) if 0 < wait <= MAX_WAIT else DEFAULT_WAIT
        elif t == "subscribe":
            f["history"] = _bool(msg, "history", t, True)
        return cls(**f)


def ok(rid: Any, result: Any) -> dict:
    return {"v": VERSION, "type": "ok", "id": rid, "result": result}


def error(rid: Any, code: str, message: str) -> dict:
    """``code``: "user" (the request is at fault), "internal" (the daemon is), "denied"."""
    return {"v": VERSION, "type": "error", "id": rid, "code": code, "error": message}
