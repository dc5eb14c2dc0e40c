"""`run` and `replay` refuse what cannot train before they write anything: the checks of
`validate`, limits the model cannot meet, and data, model or device errors at setup —
exit 2, one line on stderr, no runs/<id>/ left (issue 14, items 1-3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_helpers import run_cli
from trust_helpers import error_lines, run_dirs

ALL_GROUPS = '["embeddings", "layer.0", "layer.1", "head"]'


def _refused(workspace: Path, argv: list[str], capsys, *expected: str) -> str:
    code, out, err = run_cli(argv, capsys)
    lines = error_lines(err)
    assert code == 2, err
    assert len(lines) == 1, lines
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert run_dirs(workspace) == []
    return lines[0]


def test_run_refuses_freezing_every_group(workspace, session_file, capsys):
    s = session_file(extra=f"\n[freeze]\nlayers = {ALL_GROUPS}\n")
    _refused(workspace, ["run", str(s)], capsys, f"{s}:", "freeze.layers: freezes every layer group")


def test_replay_refuses_a_recorded_edit_that_freezes_an_unknown_layer(workspace, session_file, capsys):
    s = session_file(extra='\n[[edits]]\nstep = 1\nfreeze = ["layer.7"]\n')
    _refused(workspace, ["replay", str(s)], capsys, "edits[0].freeze: unknown layer 'layer.7'")


def test_run_refuses_an_edit_log_that_ends_up_freezing_everything(workspace, session_file, capsys):
    s = session_file(extra='\n[freeze]\nlayers = ["embeddings", "layer.0"]\n\n'
                           '[[edits]]\nstep = 1\nfreeze = ["layer.1", "head"]\n')
    _refused(workspace, ["run", str(s)], capsys, "edits[0].freeze: at step 1 this freezes every layer group")


def test_run_refuses_max_length_beyond_the_models_positions(workspace, session_file, capsys):
    s = session_file(replace={"max_length = 24": "max_length = 8192"})
    line = _refused(workspace, ["run", str(s)], capsys, "data.max_length: 8192 is more than")
    assert "(512)" in line and f"{s}:" in line


def _csv(workspace: Path, name: str, text: str) -> str:
    (workspace / "data").mkdir(exist_ok=True)
    (workspace / "data" / name).write_text(text, encoding="utf-8")
    return f"data/{name}"


ROWS = "".join(f"text number {i},{'ab'[i % 2]}\n" for i in range(24))


@pytest.mark.parametrize("name, content, extra_replace, expected", [
    ("empty.csv", "", {}, "data.source: "),
    ("header.csv", "text,label\n", {}, "no examples"),
    ("one.csv", "text,label\n" + "".join(f"t{i},a\n" for i in range(10)), {}, "only the label 'a'"),
    ("broken.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label"\n', {}, "broken.jsonl:2: not JSON"),
    ("nofield.csv", "body,label\n" + ROWS, {}, "data.text_field: "),
])
def test_run_refuses_bad_data_and_leaves_no_run_directory(workspace, session_file, capsys, name, content,
                                                          extra_replace, expected):
    src = _csv(workspace, name, content)
    s = session_file(replace={'source = "builtin:bbc-news"': f'source = "{src}"', **extra_replace})
    _refused(workspace, ["run", str(s)], capsys, expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_run_refuses_cuda_without_cuda(workspace, session_file, capsys):
    s = session_file(replace={'device = "cpu"': 'device = "cuda"'})
    _refused(workspace, ["run", str(s)], capsys, "CUDA is not available")


def test_run_refuses_a_hub_id_offline(workspace, session_file, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    s = session_file(replace={'source = "builtin:tiny-bert"': 'source = "no-such-org/no-such-model"'})
    _refused(workspace, ["run", str(s)], capsys, "model.source: ", "no-such-org/no-such-model")


def test_a_setup_error_after_the_checks_still_leaves_nothing(workspace, session_file, capsys, monkeypatch):
    # An error the checks cannot foresee (here: a broken tokenizer call in setup) is one
    # line and no run directory too.
    from tuneterm.engine import data as D

    def boom(*a, **k):
        raise RuntimeError("tokenizer exploded\nsecond line")

    monkeypatch.setattr(D, "encode", boom)
    s = session_file()
    _refused(workspace, ["run", str(s)], capsys, "setup failed: RuntimeError: tokenizer exploded")


def test_a_good_run_still_names_its_directory_once(workspace, session_file, capsys):
    s = session_file()
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 0, err
    run_dir = Path(out.strip())
    assert [ln for ln in err.splitlines() if ln.startswith("run: ")] == [f"run: {run_dir}"]
    assert run_dirs(workspace) == [run_dir.name]
