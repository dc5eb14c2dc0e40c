"""A labelled CSV and tiny classifier sessions on it, for the results tests."""

from __future__ import annotations

import csv
import random
from pathlib import Path

LABELS = ("astronomy", "cooking", "football")
WORDS = {"astronomy": "star planet orbit telescope galaxy comet moon",
         "cooking": "oven butter flour recipe bake pan salt",
         "football": "goal pitch striker match league keeper ball"}
FILLER = "the a of and to in on with for it".split()


def write_csv(path: Path, n: int, seed: int, labels=LABELS) -> None:
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "text", "label"])
        w.writeheader()
        for i in range(n):
            lab = labels[i % len(labels)]
            words = [rng.choice(WORDS.get(lab, WORDS["cooking"]).split()) for _ in range(rng.randint(3, 9))]
            words += [rng.choice(FILLER) for _ in range(rng.randint(0, 4))]
            rng.shuffle(words)
            w.writerow({"id": f"r{i}", "text": " ".join(words), "label": lab})


def session_toml(name: str, lr: float, edits: str = "") -> str:
    return f"""\
[session]
name = "{name}"
seed = 1

[model]
source = "builtin:tiny-bert"

[data]
source = "data/train.csv"
validation = "data/val.csv"
max_length = 24

[hyperparameters]
learning_rate = {lr}
batch_size = 8
epochs = 2
dropout = 0.1
weight_decay = 0.01
warmup_steps = 2

[evaluation]
interval_steps = 4

[checkpoint]
interval_steps = 4
keep_last = 2

[runtime]
kernels = "torch"
device = "cpu"
threads = 1
{edits}"""


def train(ws: Path, name: str, lr: float, edits: str = "") -> Path:
    return train_text(ws, name, session_toml(name, lr, edits))


COLOURS = "red green blue sun moon star tree river stone cloud".split()


def write_prompts(path: Path, n: int, seed: int) -> None:
    """prompt-completion records a tiny causal LM learns a little of in a few steps."""
    import json

    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(n):
            a, b = rng.choice(COLOURS), rng.choice(COLOURS)
            fh.write(json.dumps({"prompt": f"Say {a} {b}:", "completion": f" {a} {b} {a}"}) + "\n")


def lm_session_toml(name: str, extra: str = "") -> str:
    return f"""\
[session]
name = "{name}"
seed = 2

[model]
source = "builtin:tiny-llama"
task = "causal-lm"

[data]
source = "data/lm-train.jsonl"
validation = "data/lm-val.jsonl"
max_length = 32

[hyperparameters]
learning_rate = 1e-2
batch_size = 8
epochs = 3
warmup_steps = 1

[evaluation]
interval_steps = 5
samples = 0
max_new_tokens = 6

[checkpoint]
interval_steps = 5
keep_last = 2

[runtime]
kernels = "torch"
device = "cpu"
threads = 1
{extra}"""


def train_text(ws: Path, name: str, text: str) -> Path:
    from tuneterm.cli import main

    path = ws / "sessions" / f"{name}.toml"
    path.write_text(text)
    before = set((ws / "runs").iterdir())
    assert main(["-w", str(ws), "run", str(path)]) == 0
    (run_dir,) = set((ws / "runs").iterdir()) - before
    return run_dir


def copy_workspace(results_ws: Path, run: Path, dest: Path) -> tuple[Path, Path]:
    """(workspace, run directory): ``run`` and the data copied into a throwaway workspace at
    ``dest`` with the layout's other folders (sessions/, .tuneterm/) in use, for tests that
    damage a run or could delete a workspace when they fail."""
    import shutil

    ws = dest
    shutil.copytree(results_ws / "data", ws / "data")
    copy = ws / "runs" / run.name
    shutil.copytree(run, copy)
    (ws / "sessions").mkdir()
    shutil.copyfile(run / "session.toml", ws / "sessions" / f"{run.name}.toml")
    (ws / ".tuneterm").mkdir()
    (ws / ".tuneterm" / "queue.db").write_bytes(b"not empty")
    return ws, copy


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder this process cannot create anything in (root ignores file modes: /sys)."""
    import os

    if os.geteuid() == 0:
        return Path("/sys")
    d = tmp_path / "readonly"
    d.mkdir()
    d.chmod(0o555)
    return d


def listing(root: Path) -> dict:
    """Every file under ``root`` with its size and mtime (what a deletion or a write would change)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}
