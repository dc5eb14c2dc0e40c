"""[data] source and validation as a .parquet file or a `datasets` save_to_disk folder: the
same rows train the same run as JSON lines do (classification and causal LM), a paused run
resumes and a run replays exactly, `eval` and `predict` read them, and a missing column is
one line naming the file and the column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_helpers import rows, run_cli, strip_clock

KINDS = ("jsonl", "parquet", "datasets")
SUFFIX = {"jsonl": ".jsonl", "parquet": ".parquet", "datasets": "-ds"}


def classifier(name: str, kind: str, extra: str = "") -> str:
    return f"""\
[session]
name = "{name}"
seed = 1
[model]
source = "builtin:tiny-bert"
[data]
source = "data/train{SUFFIX[kind]}"
validation = "data/val{SUFFIX[kind]}"
max_length = 24
[hyperparameters]
learning_rate = 2e-3
batch_size = 8
max_steps = 10
warmup_steps = 2
[evaluation]
interval_steps = 5
[checkpoint]
interval_steps = 4
keep_last = 5
[runtime]
kernels = "torch"
device = "cpu"
threads = 1
{extra}"""


def chat_lm(name: str, kind: str) -> str:
    return f"""\
[session]
name = "{name}"
seed = 2
[model]
source = "builtin:tiny-llama"
task = "causal-lm"
[data]
source = "data/chat{SUFFIX[kind]}"
validation = "data/chatval{SUFFIX[kind]}"
max_length = 32
[hyperparameters]
learning_rate = 1e-2
batch_size = 8
max_steps = 6
warmup_steps = 1
[evaluation]
interval_steps = 3
samples = 1
max_new_tokens = 4
[runtime]
kernels = "torch"
device = "cpu"
threads = 1
"""


def _run(ws: Path, capsys, name: str, text: str, *more: str) -> tuple[int, Path | None, str]:
    path = ws / "sessions" / f"{name}.toml"
    path.write_text(text)
    code, out, err = run_cli(["run", str(path), *more], capsys)
    return code, (Path(out.strip().splitlines()[-1]) if out.strip() else None), err


def test_a_classifier_trains_the_same_on_parquet_and_a_datasets_folder_as_on_json_lines(data_ws, capsys):
    metrics = {}
    for kind in KINDS:
        code, run_dir, err = _run(data_ws, capsys, f"cls-{kind}", classifier(f"cls-{kind}", kind))
        assert code == 0, err
        metrics[kind] = strip_clock(rows(run_dir))
        start = rows(run_dir, "events.jsonl")[0]
        assert (start["train_examples"], start["val_examples"]) == (60, 18)
    assert len(metrics["jsonl"]) == 12  # 10 training rows, 2 evaluations
    assert metrics["parquet"] == metrics["jsonl"] and metrics["datasets"] == metrics["jsonl"]


def test_a_causal_lm_trains_the_same_on_parquet_and_a_datasets_folder_as_on_json_lines(data_ws, capsys):
    metrics, samples = {}, {}
    for kind in KINDS:
        code, run_dir, err = _run(data_ws, capsys, f"lm-{kind}", chat_lm(f"lm-{kind}", kind))
        assert code == 0, err
        metrics[kind] = strip_clock(rows(run_dir))
        samples[kind] = [(r["prompt"], r["reference"]) for r in rows(run_dir, "samples.jsonl")]
    assert metrics["parquet"] == metrics["jsonl"] == metrics["datasets"]
    assert samples["parquet"] == samples["jsonl"] == samples["datasets"] and samples["jsonl"]


@pytest.mark.parametrize("kind", ["parquet", "datasets"])
def test_a_run_on_a_table_pauses_resumes_and_replays_exactly(data_ws, capsys, kind):
    code, whole, err = _run(data_ws, capsys, "whole", classifier("whole", kind))
    assert code == 0, err
    ctl = data_ws / "pause.jsonl"
    ctl.write_text(json.dumps({"v": 1, "type": "pause", "id": "p", "at_step": 6}) + "\n")
    code, paused, err = _run(data_ws, capsys, "paused", classifier("paused", kind), "--control", str(ctl))
    assert code == 130, err
    assert max(r["step"] for r in rows(paused)) == 6
    code, out, err = run_cli(["run", "--resume", str(paused)], capsys)
    assert code == 0, err
    assert strip_clock(rows(paused)) == strip_clock(rows(whole))
    code, out, err = run_cli(["replay", str(paused), "--check"], capsys)
    assert code == 0 and "identical" in err, err


def test_a_missing_column_is_one_line_naming_the_file_and_the_column(data_ws, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"body": "x", "label": "a"}] * 4), data_ws / "data" / "nolabel.parquet")
    text = classifier("bad", "parquet").replace("data/train.parquet", "data/nolabel.parquet")
    code, run_dir, err = _run(data_ws, capsys, "bad", text)
    assert code == 2 and run_dir is None and not list((data_ws / "runs").iterdir())
    assert err.count("\n") == 1
    assert f"{data_ws / 'data' / 'nolabel.parquet'}: no column 'text' (columns: body, label)" in err
    code, _, err = run_cli(["validate", "--deep", str(data_ws / "sessions" / "bad.toml")], capsys)
    assert code == 2 and "bad.toml:6: data.text_field:" in err and "nolabel.parquet: no column 'text'" in err


def test_validate_refuses_a_folder_that_is_no_data_set_and_a_datasetdict(data_ws, capsys):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"text": "a", "label": "x"}]),
                          "test": datasets.Dataset.from_list([{"text": "b", "label": "y"}])}
                         ).save_to_disk(str(data_ws / "data" / "both"))
    (data_ws / "data" / "plain").mkdir()
    for source, needle in (("data/both", "data/both holds a DatasetDict (test, train): name one split's folder, "
                                         "e.g. data/both/test"),
                           ("data/plain", "data/plain is a folder, not one written by datasets' save_to_disk "
                                          "(no state.json in it)")):
        path = data_ws / "sessions" / "s.toml"
        path.write_text(classifier("s", "jsonl").replace('"data/train.jsonl"', f'"{source}"'))
        code, _, err = run_cli(["validate", "--no-model", str(path)], capsys)
        assert code == 2 and err.strip() == f"{path}:7: data.source: {needle}", err
    path.write_text(classifier("s", "jsonl").replace('"data/train.jsonl"', '"data/both/train"'))
    code, _, err = run_cli(["validate", "--no-model", str(path)], capsys)
    assert code == 0, err


def test_eval_and_predict_read_parquet_and_datasets_folders(data_ws, capsys):
    code, run_dir, err = _run(data_ws, capsys, "scored", classifier("scored", "jsonl"))
    assert code == 0, err
    scores = {}
    for kind in KINDS:
        code, out, err = run_cli(["eval", run_dir.name, str(data_ws / "data" / f"val{SUFFIX[kind]}"), "--json"],
                                 capsys)
        assert code == 0, err
        scores[kind] = {k: v for k, v in json.loads(out).items() if k != "data"}
    assert scores["parquet"] == scores["jsonl"] == scores["datasets"]
    preds = {}
    for kind in KINDS:
        code, out, err = run_cli(["predict", run_dir.name, str(data_ws / "data" / f"val{SUFFIX[kind]}")], capsys)
        assert code == 0, err
        preds[kind] = [json.loads(line) for line in out.splitlines()]
    assert preds["parquet"] == preds["jsonl"] == preds["datasets"] and len(preds["jsonl"]) == 18
    code, out, err = run_cli(["predict", run_dir.name, str(data_ws / "data" / "chat.parquet")], capsys)
    assert code == 2 and err.strip() == (f"tuneterm: error: {data_ws / 'data' / 'chat.parquet'}: no column "
                                         "'text' (columns: messages)")
