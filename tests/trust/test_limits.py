"""Limits a run cannot meet are refused with the reason (issue 14, item 2): max_steps
beyond 10^9 (statically and as a live edit), more threads than CPUs, data.max_length
beyond the model's positions — in `validate`, `run`, and the runner's pre-flight command."""

from __future__ import annotations

import subprocess
import sys

from engine_helpers import run_cli
from trust_helpers import error_lines, run_dirs

from tuneterm.session import check_set_values, load_session
from tuneterm.session.check import cpu_count


def test_max_steps_beyond_a_billion_is_refused_with_the_reason(workspace, session_file, capsys):
    s = session_file(steps=2**63 - 1)
    code, _, err = run_cli(["validate", "--no-model", str(s)], capsys)
    assert code == 2
    assert "hyperparameters.max_steps: 9223372036854775807 is more than 10^9 steps, which no run finishes" in err
    code, _, err = run_cli(["run", str(s)], capsys)
    assert code == 2 and len(error_lines(err)) == 1 and run_dirs(workspace) == []


def test_max_steps_of_a_billion_is_fine(workspace, session_file, capsys):
    s = session_file(steps=10**9)
    assert run_cli(["validate", "--no-model", str(s)], capsys)[0] == 0


def test_a_live_edit_cannot_set_max_steps_beyond_a_billion(workspace, session_file):
    session = load_session(session_file(), workspace)
    (problem,) = check_set_values({"max_steps": 2**62}, session)
    assert problem.startswith("max_steps: 4611686018427387904 is more than 10^9 steps")
    assert check_set_values({"max_steps": 500}, session) == []


def test_the_max_steps_flag_is_bounded_too(workspace, session_file, capsys):
    code, _, err = run_cli(["run", str(session_file()), "--max-steps", str(10**12)], capsys)
    assert code == 2 and "more than 10^9 steps" in err and run_dirs(workspace) == []


def test_more_threads_than_cpus_is_refused_with_the_reason(workspace, session_file, capsys):
    n = cpu_count() + 1
    s = session_file(replace={"threads = 1": f"threads = {n}"})
    code, _, err = run_cli(["validate", "--no-model", str(s)], capsys)
    assert code == 2
    assert f"runtime.threads: {n} is more than the {n - 1} CPUs here: threads beyond the CPUs wait" in err
    code, _, err = run_cli(["run", str(s)], capsys)
    assert code == 2 and "runtime.threads" in err and run_dirs(workspace) == []


def test_the_preflight_command_refuses_max_length_beyond_the_positions(workspace, session_file):
    # exactly what the daemon runs before `queue add` accepts a session (runner/daemon.py)
    s = session_file(replace={"max_length = 24": "max_length = 8192"})
    r = subprocess.run([sys.executable, "-m", "tuneterm", "validate", str(s), "--workspace", str(workspace),
                        "--deep"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stderr
    assert error_lines(r.stderr) == [f"{s}:10: data.max_length: 8192 is more than builtin:tiny-bert has "
                                     f"positions for (512); use at most 512"]
