"""Builders for the preference tests: small pair files and tiny-Llama sessions on them (a
few ms a step on the CPU)."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = "red green blue cat dog sun moon tree river stone bird fish".split()


def pair_records(n: int = 40, chat: bool = True) -> list:
    """Pairs: repeat three words (chosen) or say them backwards (rejected)."""
    out = []
    for i in range(n):
        a, b, c = WORDS[i % 12], WORDS[(i * 5 + 1) % 12], WORDS[(i * 7 + 3) % 12]
        prompt, good, bad = f"Repeat: {a} {b} {c}", f"{a} {b} {c}", f"{c} {b} {a} {a}"
        if chat:
            out.append({"prompt": [{"role": "user", "content": prompt}],
                        "chosen": [{"role": "assistant", "content": good}],
                        "rejected": [{"role": "assistant", "content": bad}]})
        else:
            out.append({"prompt": prompt + " ->", "chosen": " " + good, "rejected": " " + bad})
    return out


def write_pairs(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def pref_session(workspace: Path, name: str, *, steps: int = 8, preference: str = "", lora: str = "",
                 extra: str = "", data: str = "pairs.jsonl", chat: bool = True, seed: int = 4,
                 checkpoint_interval: int = 2, dropout: float = 0.1, model: str = "builtin:tiny-llama") -> Path:
    if not (workspace / data).exists():
        write_pairs(workspace / data, pair_records(chat=chat))
    path = workspace / "sessions" / f"{name}.toml"
    path.write_text(f"""\
[session]
name = "{name}"
seed = {seed}

[model]
source = "{model}"
task = "preference"

[data]
source = "{data}"
max_length = 40
validation_split = 0.2

[hyperparameters]
learning_rate = 3e-3
batch_size = 4
max_steps = {steps}
dropout = {dropout}
warmup_steps = 1

[preference]
beta = 0.5
{preference}

[evaluation]
interval_steps = 4
samples = 2
max_new_tokens = 5

[checkpoint]
interval_steps = {checkpoint_interval}
keep_last = 20

{lora}

[runtime]
device = "cpu"
kernels = "torch"
threads = 1
{extra}""")
    return path
