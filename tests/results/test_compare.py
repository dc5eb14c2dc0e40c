"""`tuneterm compare` on two real tiny runs, and `tuneterm report --since`."""

from __future__ import annotations

import json
import time

from engine_helpers import run_cli

from tuneterm.compare import compare_runs, format_table, parse_since, report


def _evals(run_dir):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]


def test_compare_json_on_two_real_runs(run_a, run_b, results_ws, capsys):
    code, out, err = run_cli(["-w", str(results_ws), "compare", run_a.name, run_b.name[:8], "--json"], capsys)
    assert code == 0, err
    cmp = json.loads(out)
    # only the keys that differ: the learning rate and the name (the edit log is shown apart)
    assert cmp["differences"] == {"hyperparameters.learning_rate": [0.002, 0.005], "session.name": ["tiny-a", "tiny-b"]}
    a, b = cmp["runs"]
    assert (a["run"], b["run"]) == (run_a.name, run_b.name)
    assert a["edits"] == [] and b["edits"] == [{"step": 4, "text": "learning_rate=0.001"}]
    for summary, rd in ((a, run_a), (b, run_b)):
        evals = _evals(rd)
        best = min(evals, key=lambda r: r["val_loss"])
        assert summary["best"] == {"metric": "val_loss", "value": best["val_loss"], "step": best["step"]}
        assert summary["final"] == {k: v for k, v in evals[-1].items() if k.startswith("val_")}
        assert summary["steps"] == 12 and summary["state"] == "done"
        assert summary["wall_s"] > 0


def test_compare_table_and_errors(run_a, run_b, results_ws, capsys):
    code, out, _ = run_cli(["-w", str(results_ws), "compare", run_a.name, run_b.name], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["run", run_a.name, run_b.name]
    row = next(x for x in lines if x.startswith("hyperparameters.learning_rate"))
    assert row.split()[1:] == ["0.002", "0.005"]
    assert "step 4: learning_rate=0.001" in next(x for x in lines if x.startswith("edit 1"))
    assert not any(x.startswith("data.source") for x in lines)  # equal keys are not shown
    code, _, err = run_cli(["-w", str(results_ws), "compare", run_a.name], capsys)
    assert code == 2 and "at least two" in err
    code, _, err = run_cli(["-w", str(results_ws), "compare", run_a.name, "nosuchrun"], capsys)
    assert code == 2 and "nosuchrun" in err


def test_edit_logs_of_different_lengths_side_by_side(tmp_path):
    for name, edits in (("x", ["learning_rate = 1e-3", "dropout = 0.2"]), ("y", [])):
        rd = tmp_path / name
        rd.mkdir()
        text = f'[session]\nname = "{name}"\n' + "".join(
            f"\n[[edits]]\nstep = {10 * (i + 1)}\nset = {{ {e} }}\n" for i, e in enumerate(edits))
        (rd / "session.toml").write_text(text)
    text = format_table(compare_runs([tmp_path / "x", tmp_path / "y"]))
    assert "edit 2" in text and "step 20: dropout=0.2" in text
    assert "not started" in text  # no events: the state says so


def test_report_since(run_a, run_b, results_ws, capsys, tmp_path):
    failed = results_ws / "runs" / "zz-failed"
    failed.mkdir()
    (failed / "session.toml").write_text('[session]\nname = "zz"\n')
    now = time.time()
    (failed / "events.jsonl").write_text(
        json.dumps({"kind": "start", "step": 0, "time": now - 5}) + "\n" +
        json.dumps({"kind": "end", "step": 3, "state": "failed", "reason": "non-finite loss (nan) at step 3",
                    "time": now - 1}) + "\n")
    try:
        code, out, err = run_cli(["-w", str(results_ws), "report", "--since", "12h"], capsys)
        assert code == 0, err
        assert run_a.name in out and run_b.name in out
        assert "failed: zz-failed: non-finite loss (nan) at step 3" in out
        n = len(list((results_ws / "runs").iterdir()))  # the session's other runs are done too
        assert f"{n} runs in the last 12h: {n - 1} done, 1 failed" in out
        code, out, _ = run_cli(["-w", str(results_ws), "report", "--since", "12h", "--json"], capsys)
        rows = {r["run"]: r for r in json.loads(out)["runs"]}
        assert rows[run_b.name]["edits"] == [{"step": 4, "text": "learning_rate=0.001"}]
        assert rows["zz-failed"]["state"] == "failed"
        # a window that ended before these runs: nothing
        assert report(results_ws / "runs", parse_since("1m"), now=now + 3600) == []
        code, _, err = run_cli(["-w", str(results_ws), "report", "--since", "soon"], capsys)
        assert code == 2 and "--since 'soon'" in err
    finally:
        import shutil

        shutil.rmtree(failed)


def test_compare_names_a_run_whose_session_cannot_be_read(run_a, results_ws, tmp_path, capsys):
    cases = {"garbage": b"this is = = not toml\n[[[", "latin1": '[session]\nname = "caf\xe9"\n'.encode("latin-1"),
             "not-a-session": b"session = 3\n"}
    for name, content in cases.items():
        bad = tmp_path / name
        bad.mkdir()
        (bad / "session.toml").write_bytes(content)
        code, out, err = run_cli(["-w", str(results_ws), "compare", run_a.name, str(bad)], capsys)
        assert code == 2, (name, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and out == "", err
        assert f"{bad}/session.toml" in err, err
