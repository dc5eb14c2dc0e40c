"""`tuneterm eval` gives the run's own evaluation on the same rows; `predict` keeps the
input's rows and columns; bad files are one-line errors, exit 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from engine_helpers import run_cli
from results_helpers import LABELS, unwritable_dir, write_csv


def _eval_rows(run_dir: Path) -> dict:
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == "eval"}


@pytest.mark.parametrize("which, step", [("last", 12), ("step-8", 8)])
def test_eval_equals_the_runs_own_evaluation(run_b, results_ws, capsys, which, step):
    code, out, err = run_cli(["-w", str(results_ws), "eval", run_b.name, str(results_ws / "data" / "val.csv"),
                              "--checkpoint", which, "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    own = _eval_rows(run_b)[step]
    assert res["step"] == step and res["examples"] == 18
    assert res["loss"] == pytest.approx(own["val_loss"], rel=1e-5)
    assert res["accuracy"] == own["val_accuracy"]
    assert res["f1"] == pytest.approx(own["val_f1"], abs=1e-12)
    cm = res["confusion"]["matrix"]
    assert res["confusion"]["labels"] == list(LABELS)
    assert [sum(row) for row in cm] == [6, 6, 6]  # each class's support
    assert sum(cm[i][i] for i in range(3)) / 18 == pytest.approx(own["val_accuracy"])
    for i, name in enumerate(LABELS):
        pc = res["per_class"][name]
        assert pc["recall"] == pytest.approx(cm[i][i] / 6)
        col = sum(cm[j][i] for j in range(3))
        assert pc["precision"] == pytest.approx(cm[i][i] / col if col else 0.0)


def test_eval_text_output(run_a, results_ws, capsys):
    code, out, err = run_cli(["-w", str(results_ws), "eval", run_a.name, str(results_ws / "data" / "test.csv")],
                             capsys)
    assert code == 0, err
    assert "21 examples" in out and "accuracy" in out and "confusion" in out
    assert all(name in out for name in LABELS)


def _bad(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_eval_bad_files_are_one_line_errors(run_a, results_ws, tmp_path, capsys):
    unseen = tmp_path / "unseen.csv"
    write_csv(unseen, 6, seed=3, labels=("astronomy", "gardening", "knitting"))
    cases = [
        (unseen, "labels unknown to the run: 'gardening', 'knitting'"),
        (_bad(tmp_path, "nolabel.csv", "id,text\n1,star moon\n"), "no column 'label'"),
        (_bad(tmp_path, "empty.csv", ""), "empty.csv: "),  # the wording is the [data] readers'
        (_bad(tmp_path, "header.csv", "text,label\n"), "header.csv: "),
        (_bad(tmp_path, "empty.jsonl", ""), "empty.jsonl: "),
        (_bad(tmp_path, "broken.jsonl", '{"text": "a", "label": "cooking"}\n{"text": \n'), ":2: not JSON"),
        (tmp_path / "absent.csv", "no such file"),
    ]
    for path, needle in cases:
        code, out, err = run_cli(["-w", str(results_ws), "eval", run_a.name, str(path)], capsys)
        assert code == 2, (path.name, err)
        assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (path.name, err)
        assert out == ""


def test_predict_csv_to_csv_keeps_rows_and_columns(run_a, results_ws, tmp_path, capsys):
    src = results_ws / "data" / "test.csv"
    out = tmp_path / "pred.csv"
    code, _, err = run_cli(["-w", str(results_ws), "predict", run_a.name, str(src), "--out", str(out)], capsys)
    assert code == 0, err
    with open(src, newline="") as fh:
        inp = list(csv.DictReader(fh))
    with open(out, newline="") as fh:
        reader = csv.DictReader(fh)
        got = list(reader)
    assert reader.fieldnames == ["id", "text", "label", "prediction", "probability"]
    assert len(got) == len(inp) == 21
    for a, b in zip(inp, got):
        assert {k: b[k] for k in a} == a  # the input's own values, in the input's order
        assert b["prediction"] in LABELS and 1 / 3 <= float(b["probability"]) <= 1.0


def test_predict_jsonl_probs_to_stdout(run_a, results_ws, tmp_path, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(["star moon", "oven flour"])))
    code, out, err = run_cli(["-w", str(results_ws), "predict", run_a.name, str(src), "--probs"], capsys)
    assert code == 0, err
    rows = [json.loads(x) for x in out.splitlines()]
    assert [r["n"] for r in rows] == [0, 1]
    for r in rows:
        assert set(r["probs"]) == set(LABELS) and sum(r["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["probability"] == max(r["probs"].values()) and r["probs"][r["prediction"]] == r["probability"]


def test_predict_bad_input(run_a, results_ws, tmp_path, capsys):
    for path, needle in ((_bad(tmp_path, "notext.csv", "body\nhello\n"), "no column 'text'"),
                         (_bad(tmp_path, "nokey.jsonl", '{"body": "x"}\n'), ":1: needs the key 'text'"),
                         (_bad(tmp_path, "none.jsonl", "\n"), "no rows")):
        code, _, err = run_cli(["-w", str(results_ws), "predict", run_a.name, str(path),
                                "--out", str(tmp_path / "o.csv")], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o.csv").exists()
    code, _, err = run_cli(["-w", str(results_ws), "predict", run_a.name, str(results_ws / "data" / "test.csv"),
                            "--max-new-tokens", "8"], capsys)
    assert code == 2 and "causal-LM" in err


def test_a_csv_with_a_duplicated_column_is_refused_by_every_reader(run_a, results_ws, tmp_path, capsys):
    # csv.DictReader keeps the last of two same-named columns: the first would be lost
    dup = _bad(tmp_path, "dup.csv", "id,text,label,text\nr1,star moon,astronomy,oven\nr2,goal,football,pan\n")
    for argv in (["predict", run_a.name, str(dup), "--out", str(tmp_path / "o.csv")],
                 ["eval", run_a.name, str(dup)]):
        code, out, err = run_cli(["-w", str(results_ws), *argv], capsys)
        assert code == 2, (argv[0], err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and out == "", err
        assert f"{dup}:1: column 'text' appears twice" in err, err
        assert not (tmp_path / "o.csv").exists()


def test_a_causal_lm_csv_with_a_duplicated_column_is_refused(tmp_path):
    from tuneterm.engine.lm_records import read_records
    from tuneterm.errors import UserError

    dup = _bad(tmp_path, "dup.csv", "prompt,completion,prompt\nSay red:, red,Say blue:\n")
    with pytest.raises(UserError, match=r"dup.csv:1: column 'prompt' appears twice"):
        read_records(dup, "data.source")


def test_predict_out_where_it_cannot_write_is_one_line(run_a, results_ws, tmp_path, capsys):
    folder = tmp_path / "afolder"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    for out, needle in ((folder, "is a folder"), (unwritable_dir(tmp_path) / "o.csv", "cannot write"),
                        (tmp_path / "absent" / "o.csv", "no such folder")):
        code, stdout, err = run_cli(["-w", str(results_ws), "predict", run_a.name,
                                     str(results_ws / "data" / "test.csv"), "--out", str(out)], capsys)
        assert code == 2, (out, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and needle in err, err
        assert str(out) in err and stdout == ""
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_causal_lm_csv_keeps_the_line_breaks_inside_a_quoted_field(tmp_path):
    from tuneterm.engine.lm_records import read_records

    src = _bad(tmp_path, "multi.csv", 'prompt,completion\n"Say:\nred",red\nSay blue:,blue\n')
    rows = read_records(src, "data.source")
    assert [r for _, r in rows] == [{"prompt": "Say:\nred", "completion": "red"},
                                   {"prompt": "Say blue:", "completion": "blue"}]
    assert [where for where, _ in rows] == [f"{src}:2", f"{src}:4"]  # where each record starts


def test_predict_reads_a_csv_with_a_byte_order_mark(run_a, results_ws, tmp_path, capsys):
    src = tmp_path / "bom.csv"
    src.write_bytes("\ufefftext,id\nstar moon,1\n".encode("utf-8"))  # what spreadsheet programs write
    code, out, err = run_cli(["-w", str(results_ws), "predict", run_a.name, str(src)], capsys)
    assert code == 0, err
    (row,) = list(csv.DictReader(out.splitlines()))
    assert row["text"] == "star moon" and row["id"] == "1" and row["prediction"] in LABELS
