"""`validate --deep` names the key at fault, on its own line (issue 14, item 4); a CSV
whose header starts with a byte-order mark is read (the last item of issue 14)."""

from __future__ import annotations

from pathlib import Path

from engine_helpers import run_cli

from tuneterm.engine.data import read_file


def _line(path: Path, text: str) -> int:
    """The 1-based line of ``path`` that starts with ``text``."""
    lines = path.read_text().splitlines()
    return next(i for i, ln in enumerate(lines, 1) if ln.startswith(text))


def _data(workspace: Path, name: str, content: str | bytes) -> str:
    (workspace / "data").mkdir(exist_ok=True)
    f = workspace / "data" / name
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    return f"data/{name}"


ROWS = "".join(f"text number {i},{'ab'[i % 2]}\n" for i in range(24))


def test_a_data_error_names_data_source_on_its_line(workspace, session_file, capsys):
    src = _data(workspace, "header.csv", "text,label\n")
    s = session_file(replace={'source = "builtin:bbc-news"': f'source = "{src}"'})
    code, out, err = run_cli(["validate", "--deep", str(s)], capsys)
    assert code == 2
    line = _line(s, f'source = "{src}"')
    assert err == f"{s}:{line}: data.source: {workspace / src}: no examples\n"


def test_a_broken_jsonl_line_names_data_source_and_the_files_line(workspace, session_file, capsys):
    src = _data(workspace, "d.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n{oops\n')
    s = session_file(replace={'source = "builtin:bbc-news"': f'source = "{src}"'})
    code, _, err = run_cli(["validate", "--deep", str(s)], capsys)
    assert code == 2
    assert err.startswith(f"{s}:{_line(s, f'source = {chr(34)}{src}')}: data.source: {workspace / src}:3: not JSON")


def test_a_missing_column_names_the_field_at_fault(workspace, session_file, capsys):
    src = _data(workspace, "d.csv", "text,label\n" + ROWS)
    s = session_file(replace={'source = "builtin:bbc-news"': f'source = "{src}"\ntext_field = "body"'})
    code, _, err = run_cli(["validate", "--deep", str(s)], capsys)
    assert code == 2
    assert err == (f"{s}:{_line(s, 'text_field = ')}: data.text_field: {workspace / src}:1: "
                   f"no column 'body' (columns: text, label)\n")


def test_max_length_is_checked_against_the_models_positions(workspace, session_file, capsys):
    # no --deep needed: the limit comes from the model's configuration
    s = session_file(replace={"max_length = 24": "max_length = 8192"})
    code, _, err = run_cli(["validate", str(s)], capsys)
    assert code == 2
    assert err == (f"{s}:{_line(s, 'max_length = ')}: data.max_length: 8192 is more than builtin:tiny-bert "
                   f"has positions for (512); use at most 512\n")


def test_a_csv_with_a_byte_order_mark_is_read(workspace, session_file, capsys):
    src = _data(workspace, "bom.csv", b"\xef\xbb\xbf" + ("text,label\n" + ROWS).encode())
    split = read_file(workspace / src, "text", "label")
    assert split.texts[0] == "text number 0" and split.labels[:2] == ["a", "b"]
    s = session_file(replace={'source = "builtin:bbc-news"': f'source = "{src}"'})
    code, out, err = run_cli(["validate", "--deep", str(s)], capsys)
    assert (code, out, err) == (0, f"{s}: ok\n", "")


def test_a_jsonl_with_a_byte_order_mark_is_read(workspace):
    src = _data(workspace, "bom.jsonl", b'\xef\xbb\xbf{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n')
    assert read_file(workspace / src, "text", "label").labels == ["x", "y"]


LORA = "\n[lora]\nenabled = true\nr = 4\nalpha = 8\n"


def test_smoke_blames_freeze_layers_when_freezing_leaves_nothing_to_train(workspace, session_file, capsys):
    # every layer group with adapters frozen (embeddings has none): nothing would train
    s = session_file(extra=LORA + '\n[freeze]\nlayers = ["layer.0", "layer.1", "head"]\n')
    code, out, err = run_cli(["validate", "--smoke", str(s)], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"{s}:{_line(s, 'layers = ')}: freeze.layers: "), err


def test_a_language_model_data_error_names_data_source(workspace, session_file, capsys):
    src = _data(workspace, "empty.json", "[]")
    s = session_file(replace={'source = "builtin:tiny-bert"': 'source = "builtin:tiny-llama"\ntask = "causal-lm"',
                              'source = "builtin:bbc-news"': f'source = "{src}"'})
    code, _, err = run_cli(["validate", "--smoke", str(s)], capsys)
    assert code == 2
    assert err == f"{s}:{_line(s, f'source = {chr(34)}{src}')}: data.source: {workspace / src}: no records\n"
