"""The daemon process and its socket: detached, one per workspace, owner-only socket and
folder, peer uid checked, stale socket replaced, corrupt queue refused, paths confined."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import struct
from pathlib import Path

import pytest
from runner_helpers import alive, wait_for

from tuneterm.errors import UserError
from tuneterm.runner.client import RunnerClient, RunnerUnavailable, start_daemon
from tuneterm.runner.paths import db_path, socket_path
from tuneterm.runner.server import peer_allowed


def test_daemon_is_detached_single_and_torch_free(runner):
    runner.use_fake_worker(slots=0)
    first = start_daemon(runner.ws)
    assert first["started"]
    pid = first["pid"]
    second = start_daemon(runner.ws)  # a second start reports the running one
    assert second == {"pid": pid, "started": False}
    wait_for(lambda: runner.pids("tuneterm.runner.daemon") == [pid], 10, "the second daemon to exit")
    assert os.getsid(pid) != os.getsid(0)  # its own session: survives the terminal's hang-up
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "torch" not in maps and "libtorch" not in maps
    assert (runner.ws / ".tuneterm" / "daemon.pid").read_text().split()[0] == str(pid)
    assert "starting" in (runner.ws / ".tuneterm" / "daemon.log").read_text()
    os.kill(pid, signal.SIGHUP)  # what a closing SSH session sends
    assert runner.client().list_sessions() == [] and alive(pid)


def test_socket_and_folder_are_owner_only(runner, runtime_dir):
    runner.use_fake_worker(slots=0)
    c = runner.client()
    sp = socket_path(runner.ws)
    assert sp.parent == runtime_dir and len(str(sp)) <= 107
    assert stat.S_IMODE(os.stat(runtime_dir).st_mode) == 0o700
    assert stat.S_ISSOCK(os.stat(sp).st_mode) and stat.S_IMODE(os.stat(sp).st_mode) == 0o600
    assert c.status()["socket"] == str(sp)


def _connect_as(uid: int, path: Path) -> str:
    """Fork, drop to ``uid``, connect and say hello; what happened, as text."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            os.setgid(uid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(str(path))
            data = s.recv(65536).decode()  # a refused peer is told at once, before any request
            os.write(w, ("answer " + data).encode())
        except OSError as e:
            os.write(w, f"oserror {e.errno}".encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    return out.decode()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another uid")
def test_other_uid_is_refused(runner, runtime_dir):
    runner.use_fake_worker(slots=0)
    runner.client()
    sp = socket_path(runner.ws)
    # First line of defence: the 0700 folder — another user cannot even reach the socket.
    assert _connect_as(65534, sp).startswith("oserror 13")
    # Open both up to show the second line: the daemon checks the peer's uid (SO_PEERCRED).
    os.chmod(runtime_dir.parent, 0o755)  # the per-test temporary folder above it
    os.chmod(runtime_dir, 0o755)
    os.chmod(sp, 0o777)
    try:
        got = _connect_as(65534, sp)
    finally:
        os.chmod(runtime_dir.parent, 0o700)
        os.chmod(runtime_dir, 0o700)
        os.chmod(sp, 0o600)
    assert got.startswith("answer ")
    msg = json.loads(got[len("answer "):].splitlines()[0])
    assert msg["type"] == "error" and "permission denied" in msg["error"] and "65534" in msg["error"]
    assert "refused a connection from uid 65534" in (runner.ws / ".tuneterm" / "daemon.log").read_text()


def test_peer_check_function():
    assert peer_allowed(os.getuid())
    assert not peer_allowed(os.getuid() + 1)


def test_stale_socket_is_replaced(runner):
    runner.use_fake_worker(slots=0)
    sp = socket_path(runner.ws)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sp))  # a socket file nobody listens on: what a kill -9 leaves behind
    s.close()
    assert sp.exists()
    c = runner.client()
    assert c.list_sessions() == []
    assert "replacing the stale socket" in (runner.ws / ".tuneterm" / "daemon.log").read_text()


def test_runtime_folder_owned_by_someone_else_is_refused(runner, runtime_dir):
    if os.getuid() != 0:
        pytest.skip("needs root to chown")
    runtime_dir.mkdir(mode=0o700)
    os.chown(runtime_dir, 65534, 65534)
    with pytest.raises(RunnerUnavailable, match="not a directory owned by"):
        RunnerClient.connect(runner.ws)


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, "sqlite-other"],
                         ids=["garbage", "foreign-sqlite"])
def test_corrupt_queue_refused_and_moved_aside(runner, content):
    runner.use_fake_worker(slots=0)
    db = db_path(runner.ws)
    if content == "sqlite-other":
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE notes (x)")
        con.commit()
        con.close()
    else:
        db.write_bytes(content)
    before = db.read_bytes()
    with pytest.raises(RunnerUnavailable, match="moved it aside"):
        start_daemon(runner.ws)
    wait_for(lambda: runner.daemon_pid() is None, 10, "the refusing daemon to exit")
    aside = list(db.parent.glob("queue.db.corrupt-*"))
    assert [p for p in aside if p.read_bytes() == before]  # kept, byte for byte
    assert not db.exists()
    # The next start begins an empty queue (the person was told).
    assert runner.client().list_sessions() == []


def test_truncated_database_is_refused(runner):
    runner.use_fake_worker(slots=0)
    c = runner.client()
    for i in range(3):
        c.add(runner.session(f"t{i}", fake=True), check=False)
    c.shutdown()
    wait_for(lambda: runner.daemon_pid() is None, 10, "the daemon to stop")
    db = db_path(runner.ws)
    data = db.read_bytes()
    db.write_bytes(data[:100] + b"\xff" * 200 + data[300:])  # smash the header/schema page
    with pytest.raises(RunnerUnavailable, match="queue database"):
        start_daemon(runner.ws)


def test_paths_cannot_escape_the_workspace(runner, tmp_path):
    runner.use_fake_worker(slots=0)
    c = runner.client()
    outside = tmp_path / "outside.toml"
    outside.write_text('[session]\nname = "x"\n')
    with pytest.raises(UserError, match="outside the workspace"):
        c.add(outside, check=False)
    link = runner.ws / "sessions" / "link.toml"
    link.symlink_to(outside)
    with pytest.raises(UserError, match="outside the workspace"):
        c.add(link, check=False)
    with pytest.raises(UserError, match="outside the workspace"):
        c.add(runner.ws / "sessions" / ".." / ".." / "outside.toml", check=False)
    evil = runner.ws / "sessions" / "evil.toml"
    evil.write_text('[session]\nname = "../../../etc/evil"\n')
    s = c.add(evil, check=False)
    assert Path(s["run_dir"]).parent == runner.ws / "runs"


def test_bad_requests_get_one_line_errors(runner):
    runner.use_fake_worker(slots=0)
    runner.client()
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(socket_path(runner.ws)))
    f = s.makefile("rwb")

    def ask(raw: bytes) -> dict:
        f.write(raw + b"\n")
        f.flush()
        return json.loads(f.readline())

    assert ask(b"not json")["type"] == "error"
    assert "unsupported protocol version" in ask(b'{"v":99,"type":"list","id":"1"}')["error"]
    assert ask(b'{"v":1,"type":"frobnicate","id":"2"}') == {
        "v": 1, "type": "error", "id": "2", "code": "user", "error": "unknown request 'frobnicate'"}
    assert ask(b'{"v":1,"type":"get","id":"3","ref":"nope"}')["code"] == "user"
    assert ask(b'{"v":1,"type":"list","id":"4"}') == {"v": 1, "type": "ok", "id": "4", "result": []}
    s.close()


def test_daemon_stop_removes_socket_and_pid(runner):
    runner.use_fake_worker(slots=0)
    c = runner.client()
    pid = c.daemon["pid"]
    c.shutdown()
    wait_for(lambda: not alive(pid), 10, "the daemon to exit")
    assert not socket_path(runner.ws).exists()
    assert not (runner.ws / ".tuneterm" / "daemon.pid").exists()
    with pytest.raises(RunnerUnavailable):
        RunnerClient.connect(runner.ws, start=False)
