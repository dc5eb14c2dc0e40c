"""A model folder whose weights are pickles is refused with one line, never loaded — and
`validate` does not call it ok (issue 14, item 6)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from engine_helpers import run_cli
from trust_helpers import error_lines, run_dirs


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A small BERT saved as a Hugging Face folder (safetensors), with MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tuneterm.engine.models import minilm_path

    out = tmp_path_factory.mktemp("models") / "tiny"
    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    config = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


@pytest.fixture
def folder_session(workspace, session_file, tiny_folder):
    def make(damage=None) -> Path:
        dest = workspace / "models" / "m"
        shutil.copytree(tiny_folder, dest)
        if damage:
            damage(dest)
        return session_file(replace={'source = "builtin:tiny-bert"': 'source = "models/m"'})

    return make


def test_a_safetensors_folder_is_fine(folder_session, capsys):
    s = folder_session()
    assert run_cli(["validate", str(s)], capsys)[:2] == (0, f"{s}: ok\n")


def _pickle_renamed(dest: Path) -> None:
    f = dest / "model.safetensors"
    f.unlink()
    torch.save({"w": torch.zeros(2)}, f)


def _bin_only(dest: Path) -> None:
    (dest / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(2)}, dest / "pytorch_model.bin")


def _truncated(dest: Path) -> None:
    f = dest / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])


@pytest.mark.parametrize("damage, expected", [
    (_pickle_renamed, "model.safetensors is a pickle (a torch.save file), not safetensors: refused"),
    (_bin_only, "holds its weights as pytorch_model.bin, a pickle (loading it could run code)"),
    (_truncated, "model.safetensors is truncated"),
])
def test_pickled_or_broken_weights_are_refused_in_one_line(workspace, folder_session, capsys, damage, expected):
    s = folder_session(damage)
    code, out, err = run_cli(["validate", str(s)], capsys)
    assert code == 2 and out == ""
    (line,) = error_lines(err)
    assert line.startswith(f"{s}:6: model.source: 'models/m'") and expected in line, line
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 2 and len(error_lines(err)) == 1 and expected in err and "Traceback" not in err
    assert run_dirs(workspace) == []
