"""Every reader of a checkpoint (`eval`, `predict`, `export`) checks it against its manifest
first, as a resume does: a damaged checkpoint asked for by name is one line naming it
(exit 2), never a traceback nor results from damaged weights; `last` and `best` pass over
a damaged newer checkpoint and say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_helpers import run_cli
from results_helpers import copy_workspace


@pytest.fixture
def damaged(results_ws: Path, run_b: Path, tmp_path: Path) -> tuple[Path, Path]:
    return copy_workspace(results_ws, run_b, tmp_path / "ws")


def flip(f: Path) -> None:
    """One byte changed near the end (inside the tensors), the size kept: only the checksum sees it."""
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))


def truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def garble(f: Path) -> None:
    text = f.read_text()
    f.write_text("#garbled" + text[8:])


STEP8 = Path("checkpoints") / "step-00000008"


def _verb(verb: str, ws: Path, run: Path, tmp_path: Path) -> list[str]:
    if verb == "eval":
        return ["eval", run.name, str(ws / "data" / "val.csv")]
    if verb == "predict":
        return ["predict", run.name, str(ws / "data" / "test.csv"), "--out", str(tmp_path / "pred.csv")]
    return ["export", run.name, str(tmp_path / "exported")]


@pytest.mark.parametrize("verb", ["eval", "predict", "export"])
@pytest.mark.parametrize("damage, name, reason", [
    (flip, "model.safetensors", "model.safetensors does not match its checksum"),
    (truncate, "model.safetensors", "model.safetensors is truncated"),
    (garble, "state.json", "state.json does not match its checksum"),
])
def test_a_damaged_checkpoint_asked_for_is_one_line_naming_it(damaged, tmp_path, capsys, verb, damage, name,
                                                               reason):
    ws, run = damaged
    damage(run / STEP8 / name)
    code, out, err = run_cli(["-w", str(ws), *_verb(verb, ws, run, tmp_path), "--checkpoint", "step-8"], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and out == "", err
    assert "step-00000008" in err and reason in err, err
    assert not (tmp_path / "pred.csv").exists() and not (tmp_path / "exported").exists()


def test_a_checkpoint_without_manifest_is_checked_for_shape(damaged, tmp_path, capsys):
    ws, run = damaged
    (run / STEP8 / "manifest.json").unlink()  # as round 1 wrote them
    truncate(run / STEP8 / "model.safetensors")
    code, _, err = run_cli(["-w", str(ws), *_verb("eval", ws, run, tmp_path), "--checkpoint", "step-8"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "step-00000008" in err and "model.safetensors is truncated" in err


def test_last_passes_over_a_damaged_newer_checkpoint_and_says_so(damaged, tmp_path, capsys):
    ws, run = damaged
    flip(run / "checkpoints" / "step-00000012" / "model.safetensors")
    code, out, err = run_cli(["-w", str(ws), *_verb("eval", ws, run, tmp_path), "--checkpoint", "last", "--json"],
                             capsys)
    assert code == 0, err
    assert json.loads(out)["step"] == 8
    assert "step-00000012 skipped: model.safetensors does not match its checksum" in err


def test_a_damaged_best_checkpoint_is_refused_by_name(damaged, tmp_path, capsys):
    ws, run = damaged
    newest = json.loads((run / "checkpoints" / "step-00000012" / "state.json").read_text())
    best = newest["early_stopping"]["best_step"]
    target = run / "checkpoints" / f"step-{best:08d}"
    assert target.is_dir()
    flip(target / "model.safetensors")
    code, _, err = run_cli(["-w", str(ws), *_verb("export", ws, run, tmp_path)], capsys)  # best, the default
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"step-{best:08d}" in err and "checksum" in err and "--checkpoint" in err
    assert not (tmp_path / "exported").exists()
