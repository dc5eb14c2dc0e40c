"""What a causal-LM run says about its data: examples left out at max_length are counted
under their real reason, on the terminal as well as in events.jsonl, and a chat template
that raises stops the run with one line naming the record and the template's message."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from engine_helpers import rows, run_cli

from tuneterm.errors import UserError


def _session(workspace: Path, *, source: str = "builtin:tiny-llama", data: str = "pc.jsonl",
             max_length: int = 16) -> Path:
    path = workspace / "sessions" / "lm.toml"
    path.write_text(f"""\
[session]
name = "lm"
seed = 4

[model]
source = "{source}"
task = "causal-lm"

[data]
source = "{data}"
max_length = {max_length}
validation_split = 0.25

[hyperparameters]
learning_rate = 1e-3
batch_size = 2
max_steps = 1

[evaluation]
interval_steps = 10
samples = 0

[runtime]
device = "cpu"
kernels = "torch"
threads = 1
""")
    return path


def test_every_example_left_out_names_the_real_reason(workspace, tok):
    """The built-in headlines at max_length = 8: every prompt is longer than that, and the
    error counts them as such (not "0 lost everything to truncation")."""
    from tuneterm.engine.tasks.causal_lm import CausalLMTask
    from tuneterm.session.io import load_session

    s = load_session(_session(workspace, data="builtin:bbc-news", max_length=8), workspace)
    with pytest.raises(UserError) as e:
        CausalLMTask().load_data(s, workspace, tok)
    msg = str(e.value)
    assert msg.startswith("data.source: no training example keeps a trained token at max_length = 8 (")
    m = re.search(r"\((\d+) of (\d+) examples left out at max_length = 8: (\d+) with a prompt longer than "
                  r"that\)", msg)
    assert m and len(set(m.groups())) == 1 and int(m.group(1)) > 100, msg  # they add up


def test_examples_left_out_are_reported_on_the_terminal(workspace, capsys, tok):
    """Prompts of exactly max_length tokens leave no room for a trained token: those records
    are left out, and `tuneterm run` says so on stderr (and log.txt), not only in the start event."""
    lines = [json.dumps({"prompt": "word " * 16, "completion": "done"}) for _ in range(3)]
    lines += [json.dumps({"prompt": f"say {w}", "completion": w}) for w in "red green blue cat dog sun moon".split()]
    (workspace / "pc.jsonl").write_text("\n".join(lines) + "\n")
    assert len(tok("word " * 16, add_special_tokens=False)["input_ids"]) == 16
    code, out, err = run_cli(["run", str(_session(workspace))], capsys)
    assert code == 0, err
    run_dir = Path(out.strip())
    start = next(e for e in rows(run_dir, "events.jsonl") if e["kind"] == "start")
    assert start["no_trained_tokens"] == 3
    n_train, n_val = start["train_examples"], start["val_examples"]
    assert n_train + n_val == 7
    said = [line for line in err.splitlines() if "left out at max_length" in line]
    assert said and all("with a prompt of exactly 16 tokens" in line for line in said)
    counted = sum(int(line.split(" of ")[0].split()[-1]) for line in said)
    assert counted == 3
    assert "left out at max_length = 16" in (run_dir / "log.txt").read_text()


@pytest.fixture(scope="module")
def raising_template_model(tmp_path_factory) -> Path:
    """The tiny Llama saved as a model folder whose tokenizer's chat template raises on a
    system turn (as Gemma's does)."""
    from tuneterm.engine.models import build_causal_lm, load_tokenizer

    out = tmp_path_factory.mktemp("models") / "strict-chat"
    tok = load_tokenizer("builtin:tiny-llama")
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                         "{{ raise_exception('System role not supported') }}{% endif %}"
                         "{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}\n{% endfor %}")
    build_causal_lm("builtin:tiny-llama", tokenizer=tok).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def test_a_chat_template_that_raises_stops_the_run_in_one_line(workspace, capsys, raising_template_model):
    chat = [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]}
            for w in "red green blue cat dog sun moon".split()]
    chat.insert(4, {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi."},
                                 {"role": "assistant", "content": "Hello."}]})
    (workspace / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat))
    shutil.copytree(raising_template_model, workspace / "models" / "strict-chat")  # inside the workspace
    s = _session(workspace, source="models/strict-chat", data="chat.jsonl", max_length=48)
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{workspace / 'chat.jsonl'}:5: messages: the chat template raised TemplateError: " \
           "System role not supported" in err
    assert not list((workspace / "runs").iterdir())  # nothing half-written
