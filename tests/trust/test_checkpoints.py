"""Checkpoints are verified before use: a manifest of sizes and sha256 written last, the
newest intact checkpoint chosen, every damaged one named with its reason (issue 14, item 6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from trust_helpers import delete_field, garble, truncate

from tuneterm.engine import checkpoint as ckpt
from tuneterm.rundir import checkpoint_steps


def _save(root: Path, step: int) -> Path:
    torch.manual_seed(step)
    model = torch.nn.Linear(4, 3)
    return ckpt.save(root, step, model, {"m": torch.randn(3, 4)}, {"step": step, "cursor": 0})


@pytest.fixture
def two(tmp_path: Path) -> Path:
    root = tmp_path / "checkpoints"
    _save(root, 4)
    _save(root, 8)
    return root


def test_a_fresh_checkpoint_has_a_manifest_and_verifies(two: Path):
    man = json.loads((two / "step-00000008" / "manifest.json").read_text())
    assert set(man["files"]) == {"model.safetensors", "optimizer.safetensors", "state.json"}
    assert all(len(v["sha256"]) == 64 for v in man["files"].values())
    assert ckpt.verify(two / "step-00000008") == (None, True)
    assert ckpt.latest_intact(two) == (two / "step-00000008", [])


@pytest.mark.parametrize("damage, name, reason", [
    (truncate, "model.safetensors", "model.safetensors is truncated"),
    (garble, "state.json", "state.json does not match its checksum"),
    (delete_field, "state.json", "state.json is truncated: "),
    (lambda f: f.unlink(), "optimizer.safetensors", "optimizer.safetensors is missing"),
])
def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one(two: Path, damage, name, reason):
    newest = two / "step-00000008"
    damage(newest / name)
    path, skipped = ckpt.latest_intact(two)
    assert path == two / "step-00000004"
    assert len(skipped) == 1 and skipped[0][0] == newest
    assert skipped[0][1].startswith(reason), skipped[0][1]


def test_a_damaged_manifest_is_a_reason_too(two: Path):
    (two / "step-00000008" / "manifest.json").write_text("{not json")
    path, skipped = ckpt.latest_intact(two)
    assert path == two / "step-00000004"
    assert skipped[0][1].startswith("manifest.json is not valid JSON")


def test_none_intact_lists_every_reason(two: Path):
    truncate(two / "step-00000008" / "model.safetensors")
    garble(two / "step-00000004" / "state.json")
    path, skipped = ckpt.latest_intact(two)
    assert path is None
    assert [p.name for p, _ in skipped] == ["step-00000008", "step-00000004"]
    msg = ckpt.unusable_message(skipped)
    assert "step-00000008: model.safetensors is truncated" in msg and "step-00000004: state.json" in msg
    assert "\n" not in msg


# -- round 1: no manifest --------------------------------------------------------------------

def _round1(path: Path) -> Path:
    (path / "manifest.json").unlink()
    return path


def test_a_round1_checkpoint_is_unverified_but_used(two: Path):
    _round1(two / "step-00000008")
    assert ckpt.verify(two / "step-00000008") == (None, False)
    assert ckpt.latest_intact(two) == (two / "step-00000008", [])
    model = torch.nn.Linear(4, 3)
    opt, state = ckpt.load(two / "step-00000008", model, "cpu")
    assert state["step"] == 8 and set(opt) == {"m"}


def _strict_loader(path: Path) -> None:
    state = ckpt.read_state(path)
    if "cursor" not in state:  # what the trainer's loader says of a missing field
        raise ValueError("state.json: missing 'cursor'")


@pytest.mark.parametrize("damage, name, reason", [
    (truncate, "model.safetensors", "model.safetensors is truncated"),
    (garble, "state.json", "state.json is not valid JSON"),
    (delete_field, "state.json", "unverified (no manifest): loading failed: ValueError: state.json: missing 'cursor'"),
])
def test_a_damaged_round1_checkpoint_falls_back(two: Path, damage, name, reason):
    newest = _round1(two / "step-00000008")
    damage(newest / name)
    path, skipped = ckpt.latest_intact(two, try_load=_strict_loader)
    assert path == two / "step-00000004"
    assert skipped[0][1].startswith(reason), skipped[0][1]


def test_a_round1_checkpoint_that_fails_to_load_falls_back(two: Path):
    _round1(two / "step-00000008")
    tried = []

    def loader(p: Path):
        tried.append(p.name)
        if p.name == "step-00000008":
            raise KeyError("epoch")

    path, skipped = ckpt.latest_intact(two, try_load=loader)
    assert path == two / "step-00000004" and tried == ["step-00000008", "step-00000004"]
    assert skipped[0][1] == "unverified (no manifest): loading failed: KeyError: 'epoch'"


# -- pickles -----------------------------------------------------------------------------------

@pytest.mark.parametrize("new_zip", [True, False])
def test_a_pickle_named_safetensors_is_refused_without_loading(tmp_path: Path, new_zip):
    f = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, f, _use_new_zipfile_serialization=new_zip)
    assert ckpt.safetensors_problem(f).startswith("model.safetensors is a pickle")


def test_a_pickle_in_a_round1_checkpoint_is_skipped(two: Path):
    newest = _round1(two / "step-00000008")
    torch.save({"weight": torch.zeros(3, 4)}, newest / "model.safetensors")
    path, skipped = ckpt.latest_intact(two)
    assert path == two / "step-00000004"
    assert "is a pickle" in skipped[0][1]


def test_set_aside_hides_a_damaged_checkpoint(two: Path):
    moved = ckpt.set_aside(two / "step-00000008")
    assert moved.name == ".corrupt-step-00000008" and moved.is_dir()
    assert checkpoint_steps(two) == [4]
