"""Two tiny classifier runs on a local CSV, trained once per test session (seconds each)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from results_helpers import copy_workspace, lm_session_toml, train, train_text, write_csv, write_prompts  # noqa: E402


@pytest.fixture(scope="session")
def results_ws(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("results") / "ws"
    for d in ("sessions", "runs", "data"):
        (ws / d).mkdir(parents=True)
    write_csv(ws / "data" / "train.csv", 48, seed=0)
    write_csv(ws / "data" / "val.csv", 18, seed=1)
    write_csv(ws / "data" / "test.csv", 21, seed=2)
    write_prompts(ws / "data" / "lm-train.jsonl", 40, seed=0)
    write_prompts(ws / "data" / "lm-val.jsonl", 10, seed=1)
    write_prompts(ws / "data" / "lm-test.jsonl", 8, seed=2)
    return ws


@pytest.fixture(scope="session")
def run_a(results_ws) -> Path:
    return train(results_ws, "tiny-a", 2e-3)


@pytest.fixture(scope="session")
def run_b(results_ws) -> Path:
    return train(results_ws, "tiny-b", 5e-3, edits="\n[[edits]]\nstep = 4\nset = { learning_rate = 1e-3 }\n")


@pytest.fixture(scope="session")
def lm_run(results_ws) -> Path:
    """A tiny Llama trained on prompt-completion records (causal-lm task)."""
    return train_text(results_ws, "tiny-lm", lm_session_toml("tiny-lm"))


@pytest.fixture(scope="session")
def lora_run(results_ws) -> Path:
    """A tiny BERT classifier trained with LoRA adapters (the head as modules_to_save)."""
    return train(results_ws, "tiny-lora", 5e-3, edits="\n[lora]\nenabled = true\nr = 4\nalpha = 8\n")


@pytest.fixture
def own_ws(results_ws: Path, run_a: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(workspace, run): a throwaway copy of run_a's workspace, for tests that could damage
    or delete it when they fail."""
    return copy_workspace(results_ws, run_a, tmp_path / "ws")
