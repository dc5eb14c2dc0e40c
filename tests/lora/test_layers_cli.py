"""`tuneterm layers` for LoRA sessions and tied weights."""

from __future__ import annotations

import json

from engine_helpers import run_cli

LORA_GPT2 = """\
[session]
name = "lg"
[model]
source = "builtin:tiny-gpt2"
task = "causal-lm"
[lora]
enabled = true
r = 4
train_base = ["layer.1"]
[freeze]
layers = ["layer.0"]
"""


def test_layers_shows_adapter_and_base_params(workspace, capsys):
    s = workspace / "sessions" / "lg.toml"
    s.write_text(LORA_GPT2)
    code, out, err = run_cli(["layers", str(s), "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["lora"] is True
    by = {r["name"]: r for r in info["layers"]}
    # c_attn (64 -> 192), c_proj (64 -> 64), c_fc (64 -> 256), mlp c_proj (256 -> 64), r = 4
    per_block = 4 * ((64 + 192) + (64 + 64) + (64 + 256) + (256 + 64))
    assert by["layer.0"]["adapter_params"] == by["layer.1"]["adapter_params"] == per_block
    assert by["layer.0"]["frozen"] and by["layer.0"]["trainable"] == 0
    assert by["layer.1"]["train_base"] and by["layer.1"]["trainable"] == by["layer.1"]["params"]
    assert by["embeddings"]["trainable"] == 0 and by["embeddings"]["tied"] == ["head"]
    assert info["trainable_params"] == by["layer.1"]["params"]
    assert "lm_head.weight (head) is transformer.wte.weight (embeddings)" in info["tied"]

    code, out, _ = run_cli(["layers", str(s)], capsys)
    lines = out.splitlines()
    assert lines[0].split() == ["LAYER", "ADAPTER", "BASE", "TRAINS", "TIED"]
    assert lines[1].split()[:2] == ["embeddings", "0"]
    assert "adapters + base" in lines[3] and lines[2].split()[-1] == "frozen"
    assert lines[-1].startswith("tied weights: ") and "freezing either group freezes it" in lines[-1]


def test_layers_full_fine_tuning_tied_head(workspace, capsys):
    s = workspace / "sessions" / "fg.toml"
    s.write_text(LORA_GPT2.replace("enabled = true", "enabled = false").replace('["layer.0"]', '["head"]'))
    code, out, err = run_cli(["layers", str(s), "--json"], capsys)
    assert code == 0, err
    by = {r["name"]: r for r in json.loads(out)["layers"]}
    # freezing the head freezes the shared matrix: the embeddings keep only their positions trainable
    assert by["head"]["frozen"] and by["embeddings"]["trainable"] == 512 * 64


def test_unknown_train_base_group_is_one_line(workspace, capsys):
    s = workspace / "sessions" / "bad.toml"
    s.write_text(LORA_GPT2.replace('train_base = ["layer.1"]', 'train_base = ["layer.7"]'))
    code, out, err = run_cli(["layers", str(s)], capsys)
    assert code == 2 and out == ""
    assert err.strip().endswith("lora.train_base: unknown layer group 'layer.7'; this model has embeddings, "
                                "layer.0, layer.1, head") and len(err.strip().splitlines()) == 1


def test_layers_of_a_run_show_its_edit_log_applied(workspace, capsys):
    """A run's layers are as its edits left them (a live `set train_base` and freezing are
    only in the edit log); a session file's are as it starts."""
    edits = ('\n[[edits]]\nstep = 2\nset = { train_base = ["layer.0"] }\n'
             '\n[[edits]]\nstep = 3\nfreeze = ["layer.1"]\nunfreeze = ["layer.0"]\n')
    run = workspace / "runs" / "lg-1"
    run.mkdir()
    (run / "session.toml").write_text(LORA_GPT2 + edits)
    code, out, err = run_cli(["layers", str(run), "--json"], capsys)
    assert code == 0, err
    by = {r["name"]: r for r in json.loads(out)["layers"]}
    assert by["layer.0"]["train_base"] and not by["layer.0"]["frozen"] and by["layer.1"]["frozen"]
    assert not by["layer.1"]["train_base"] and by["layer.0"]["trainable"] == by["layer.0"]["params"]
    s = workspace / "sessions" / "lg.toml"
    s.write_text(LORA_GPT2 + edits)
    code, out, err = run_cli(["layers", str(s), "--json"], capsys)
    by = {r["name"]: r for r in json.loads(out)["layers"]}
    assert by["layer.0"]["frozen"] and by["layer.1"]["train_base"]
