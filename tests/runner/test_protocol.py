"""The protocol at the socket: bad values are `user` errors on a connection that stays
open (never a closed connection, never `internal`); a message without "v" is refused; the
typed messages of tuneterm.protocol."""

from __future__ import annotations

import json
import socket

import pytest

from tuneterm import protocol
from tuneterm.runner.paths import socket_path

BAD = {
    "huge integer": b'{"v":1,"type":"get","id":"a","ref":100000000000000000000000000}',
    "integer of 5000 digits": b'{"v":1,"type":"get","id":"a","ref":' + b"1" * 5000 + b"}",
    "huge move target": b'{"v":1,"type":"move","id":"a","ref":1,"to":100000000000000000000000000}',
    "ref true": b'{"v":1,"type":"get","id":"a","ref":true}',
    "ref a list": b'{"v":1,"type":"pause","id":"a","ref":[1]}',
    "NUL in a path": b'{"v":1,"type":"add","id":"a","path":"sessions/a\\u0000.toml"}',
    "deep nesting": b'{"v":1,"type":"list","id":"a","x":' + b"[" * 100000 + b"]" * 100000 + b"}",
    "nesting past the limit": b'{"v":1,"type":"list","id":"a","x":' + b"[" * 40 + b"]" * 40 + b"}",
    "an overflowing float": b'{"v":1,"type":"control","id":"a","ref":1,"msg":{"type":"set","values":{"dropout":1e999}}}',
    "no v": b'{"type":"list","id":"a"}',
    "v a string": b'{"v":"1","type":"list","id":"a"}',
    "smoke not a bool": b'{"v":1,"type":"add","id":"a","path":"x.toml","smoke":"yes"}',
    "control msg without layers": b'{"v":1,"type":"control","id":"a","ref":1,"msg":{"type":"freeze"}}',
}


@pytest.fixture
def ask(runner):
    runner.use_fake_worker(slots=0)
    runner.client()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    s.connect(str(socket_path(runner.ws)))
    f = s.makefile("rwb")

    def ask(raw: bytes) -> dict:
        f.write(raw + b"\n")
        f.flush()
        line = f.readline()
        assert line, "the daemon closed the connection"
        return json.loads(line)

    yield ask
    s.close()


def test_bad_values_are_user_errors_and_the_connection_stays_open(ask):
    for what, raw in BAD.items():
        got = ask(raw)
        assert got["type"] == "error" and got["code"] == "user", (what, got)
        assert "Traceback" not in got["error"] and len(got["error"]) < 300, (what, got)
        # the same connection still answers
        assert ask(b'{"v":1,"type":"list","id":"ok"}') == {"v": 1, "type": "ok", "id": "ok", "result": []}, what
    assert "'v'" in ask(BAD["no v"])["error"]
    assert "NUL" in ask(BAD["NUL in a path"])["error"]
    assert "2^63" in ask(BAD["huge integer"])["error"]


def test_decode_refuses_what_it_cannot_trust():
    with pytest.raises(protocol.ProtocolError, match="'v'"):
        protocol.decode(b'{"type":"set","id":"a","values":{"dropout":0.1}}')
    with pytest.raises(protocol.ProtocolError, match="nested"):
        protocol.decode(b'{"v":1,"type":"list","x":' + b"[" * 10000 + b"]" * 10000 + b"}")
    assert protocol.decode(protocol.encode({"type": "list"})) == {"v": 1, "type": "list"}


def test_typed_commands_and_requests_round_trip():
    cmd = protocol.Command.parse({"v": 1, "type": "freeze", "id": "c", "layers": ["layer.0"], "at_step": 3})
    assert cmd == protocol.Command("freeze", "c", layers=("layer.0",), at_step=3)
    assert protocol.Command.parse(cmd.to_dict()) == cmd
    req = protocol.Request.parse({"v": 1, "type": "control", "id": "7", "ref": "run-1", "msg": cmd.to_dict(),
                                  "wait": 5})
    assert req.command == cmd and req.ref == "run-1" and req.wait == 5.0
    add = protocol.Request.parse({"v": 1, "type": "add", "id": "1", "path": "s.toml"})
    assert (add.smoke, add.check, add.key) == (False, True, None)
    for bad in ({"v": 1, "type": "set", "values": {}}, {"v": 1, "type": "set", "values": {"lr": [1]}},
                {"v": 1, "type": "unfreeze", "layers": [""]}, {"v": 1, "type": "launch"},
                {"v": 1, "type": "set", "values": {"dropout": 0.1}, "at_step": -1}):
        with pytest.raises(protocol.ProtocolError):
            protocol.Command.parse(bad)
    assert protocol.Command.parse({"type": "pause", "id": "p"}).id == "p"
    assert protocol.ack("a", 4) == {"v": 1, "type": "ack", "id": "a", "step": 4}
    assert protocol.reject("a", "no")["reason"] == "no"


def test_a_live_edit_is_answered_while_a_slow_add_is_checked(runner):
    """One client, two threads: a `queue add` whose pre-flight check loads the model is in
    flight while a `set` to a running session is answered (the client has a socket per
    request in flight; the daemon checks in a subprocess)."""
    import threading

    from runner_helpers import wait_for

    runner.use_fake_worker()
    c = runner.client()
    s = c.add(runner.session("live", fake=True, steps=100000, step_s=0.01), check=False)
    wait_for(lambda: c.get(s["id"])["step"] > 2, 30, "training")
    slow = runner.session("checked", steps=4)  # a real tiny-BERT session: `validate --deep` loads it
    done = threading.Event()
    t = threading.Thread(target=lambda: (c.add(slow, check=True), done.set()), daemon=True)
    t.start()
    wait_for(lambda: runner.pids("validate"), 30, "the pre-flight check to run")
    ack = c.control(s["id"], {"type": "set", "values": {"learning_rate": 1e-4}}, timeout=20)
    assert ack["type"] == "ack" and not done.is_set() and runner.pids("validate")
    t.join(300)
    assert done.is_set()
    c.cancel(s["id"])
