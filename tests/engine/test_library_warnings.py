"""Library warnings (a transformers FutureWarning every LoRA run raises, the tokenizer's
"Token indices sequence length is longer..." for a long record) go to the run's log.txt,
never to the terminal: `tuneterm run` prints its own lines only, the worker's stderr too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WARNINGS = ("FutureWarning", "Token indices sequence length")


def _session(workspace: Path) -> Path:
    """A LoRA causal-LM session on data with one record far past the tokenizer's limit."""
    rows = [{"text": " ".join(f"w{j % 50}" for j in range(i, i + 12))} for i in range(20)]
    rows[0]["text"] = " ".join(f"w{j % 50}" for j in range(900))
    (workspace / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = workspace / "sessions" / "loud.toml"
    path.write_text("""\
[session]
name = "loud"
seed = 4

[model]
source = "builtin:tiny-llama"
task = "causal-lm"

[data]
source = "long.jsonl"
max_length = 32
validation_split = 0.2

[hyperparameters]
learning_rate = 3e-3
batch_size = 4
max_steps = 1

[evaluation]
interval_steps = 1

[lora]
enabled = true
r = 4
alpha = 8

[runtime]
device = "cpu"
kernels = "torch"
threads = 1
""")
    return path


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_VERBOSITY"}  # the libraries' defaults
    return {**env, "PYTHONWARNINGS": "default"}


def _assert_logged_not_printed(err: str, run_dir: Path) -> None:
    for w in WARNINGS:
        assert w not in err, err
    log = (run_dir / "log.txt").read_text()
    assert all(w in log for w in WARNINGS), log


def test_tuneterm_run_prints_no_library_warning(workspace):
    s = _session(workspace)
    p = subprocess.run([sys.executable, "-m", "tuneterm", "run", str(s), "--workspace", str(workspace)],
                       capture_output=True, text=True, timeout=300, env=_env(), stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert p.stderr.startswith("run: "), p.stderr  # its own first line comes first
    _assert_logged_not_printed(p.stderr, Path(p.stdout.strip()))


def test_the_worker_writes_library_warnings_to_log_txt_only(workspace):
    rd = workspace / "runs" / "loud"
    rd.mkdir()
    (rd / "session.toml").write_text(_session(workspace).read_text())
    p = subprocess.run([sys.executable, "-m", "tuneterm.engine.worker", str(rd)], capture_output=True, text=True,
                       timeout=300, env=_env(), stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    _assert_logged_not_printed(p.stderr, rd)


def test_loading_a_model_folder_draws_no_progress_bar(tmp_path, capfd):
    """transformers draws a "Loading weights" tqdm bar on stderr for every from_pretrained
    (SmolLM2, any model folder); a run's terminal shows tuneterm's own lines only."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from tuneterm.engine.models import _tiny_config, build_causal_lm, build_model, load_tokenizer

    hf_logging.enable_progress_bar()  # the library's default, whatever an earlier test set
    tok = load_tokenizer("builtin:tiny-llama")
    config = _tiny_config("builtin:tiny-llama", 2, len(tok), tok.pad_token_id)
    for auto, build in ((AutoModelForCausalLM, lambda f: build_causal_lm(str(f), tokenizer=tok)),
                        (AutoModelForSequenceClassification, lambda f: build_model(str(f), 2, tokenizer=tok))):
        folder = tmp_path / auto.__name__
        auto.from_config(config).save_pretrained(str(folder), safe_serialization=True)
        tok.save_pretrained(str(folder))
        capfd.readouterr()
        build(folder)
        err = capfd.readouterr().err
        assert "Loading weights" not in err, err
