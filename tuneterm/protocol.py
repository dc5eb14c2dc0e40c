"""Versioned JSON-lines messages between clients, the runner daemon and workers.

No torch, no textual: every process speaks this module. One message is one JSON object on
one line, always carrying ``"v"`` (the protocol version) and ``"type"``.

Control messages (client -> daemon -> worker, or a ``--control`` file -> ``tuneterm run``)::

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

The full protocol (daemon requests included) is documented in docs/protocol.md.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

VERSION = 1

CONTROL_TYPES = ("set", "freeze", "unfreeze", "checkpoint", "pause", "stop")
WORKER_TYPES = ("ack", "reject", "metric", "event")


class ProtocolError(ValueError):
    """A message that cannot be parsed or has the wrong shape."""


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def encode(msg: dict) -> bytes:
    """One message as one UTF-8 JSON line (with the version added when missing)."""
    if "v" not in msg:
        msg = {"v": VERSION, **msg}
    return (json.dumps(msg, separators=(",", ":"), allow_nan=False) + "\n").encode()


def decode(line: bytes | str) -> dict:
    """Parse one line; raise ProtocolError on anything that is not a v1 message object."""
    if isinstance(line, bytes):
        try:
            line = line.decode()
        except UnicodeDecodeError as e:
            raise ProtocolError(f"not UTF-8: {e}") from None
    try:
        msg = json.loads(line, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ProtocolError(f"not JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(msg, dict):
        raise ProtocolError("a message must be a JSON object")
    v = msg.get("v", VERSION)
    if v != VERSION:
        raise ProtocolError(f"unsupported protocol version {v!r} (this side speaks {VERSION})")
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("message has no 'type'")
    return msg


def _reject_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not allowed in messages")


def control(type_: str, **fields: Any) -> dict:
    """Build a control message with a fresh id."""
    if type_ not in CONTROL_TYPES:
        raise ProtocolError(f"unknown control type {type_!r}; expected one of {', '.join(CONTROL_TYPES)}")
    return {"v": VERSION, "type": type_, "id": fields.pop("id", None) or new_id(), **fields}


def check_control(msg: dict) -> dict:
    """Validate the *shape* of a control message (values are checked by the engine,
    which knows the model's layers and the session's ranges). Returns the message."""
    t = msg.get("type")
    if t not in CONTROL_TYPES:
        raise ProtocolError(f"unknown control type {t!r}; expected one of {', '.join(CONTROL_TYPES)}")
    if t == "set":
        values = msg.get("values")
        if not isinstance(values, dict) or not values:
            raise ProtocolError("set: 'values' must be a non-empty object")
        for k, val in values.items():
            if isinstance(val, float) and not math.isfinite(val):
                raise ProtocolError(f"set: {k}: {val} is not a finite number")
    if t in ("freeze", "unfreeze"):
        layers = msg.get("layers")
        if not isinstance(layers, list) or not layers or not all(isinstance(x, str) for x in layers):
            raise ProtocolError(f"{t}: 'layers' must be a non-empty list of layer names")
    return msg


def ack(msg_id: str | None, step: int, **extra: Any) -> dict:
    return {"v": VERSION, "type": "ack", "id": msg_id, "step": step, **extra}


def reject(msg_id: str | None, reason: str) -> dict:
    return {"v": VERSION, "type": "reject", "id": msg_id, "reason": reason}


def metric(row: dict) -> dict:
    return {"v": VERSION, "type": "metric", "data": row}


def event(row: dict) -> dict:
    return {"v": VERSION, "type": "event", "data": row}
