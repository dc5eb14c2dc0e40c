"""`tuneterm export` never deletes a workspace or a run, even with --force; a folder it
cannot write is one line (exit 2); replacing a symbolic link leaves nothing behind.

Each test works on its own copy of a workspace: a broken export must not delete the
session-wide one the other results tests share."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from engine_helpers import run_cli
from results_helpers import listing, unwritable_dir

# OUT, relative to the workspace's parent, as a function of (workspace, run)
TARGETS = {
    "the workspace": lambda ws, run: ws,
    "runs/": lambda ws, run: ws / "runs",
    "the run": lambda ws, run: run,
    "a folder of the run": lambda ws, run: run / "checkpoints",
    "a new folder inside the run": lambda ws, run: run / "exported",
    "a new folder inside runs/": lambda ws, run: ws / "runs" / "exported",
    "sessions/": lambda ws, run: ws / "sessions",
    ".tuneterm/": lambda ws, run: ws / ".tuneterm",
    "the workspace's parent": lambda ws, run: ws.parent,
}


@pytest.mark.parametrize("where", list(TARGETS))
def test_export_refuses_the_workspace_and_its_runs_even_with_force(own_ws, capsys, where):
    ws, run = own_ws
    out = TARGETS[where](ws, run)
    before = listing(ws.parent)
    code, stdout, err = run_cli(["-w", str(ws), "export", run.name, str(out), "--force"], capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and stdout == ""
    assert str(out) in err and "never" in err, err
    assert listing(ws.parent) == before  # nothing deleted, nothing written
    assert not any(p.name.startswith((".exported", f".{out.name}.")) for p in out.parent.iterdir())


@pytest.mark.parametrize("points_to", ["the workspace", "the run", "runs/"])
def test_a_symbolic_link_to_the_workspace_or_a_run_is_refused_too(own_ws, tmp_path, capsys, points_to):
    ws, run = own_ws
    link = tmp_path / "link"
    link.symlink_to(TARGETS[points_to](ws, run), target_is_directory=True)
    before = listing(ws)
    code, _, err = run_cli(["-w", str(ws), "export", run.name, str(link), "--force"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert link.is_symlink() and listing(ws) == before


def test_a_run_given_by_path_outside_the_workspace_is_protected(own_ws, tmp_path, capsys):
    ws, run = own_ws
    elsewhere = tmp_path / "elsewhere" / "myrun"
    shutil.move(run, elsewhere)
    before = listing(elsewhere)
    code, _, err = run_cli(["-w", str(ws), "export", str(elsewhere), str(elsewhere), "--force"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert listing(elsewhere) == before


@pytest.mark.parametrize("where", ["the run", "a folder inside it", "its parent"])
def test_another_run_kept_outside_the_workspace_is_protected(own_ws, tmp_path, capsys, where):
    ws, run = own_ws
    other = tmp_path / "elsewhere" / "kept"
    shutil.copytree(run, other)
    out = {"the run": other, "a folder inside it": other / "exported", "its parent": other.parent}[where]
    before = listing(tmp_path / "elsewhere")
    code, _, err = run_cli(["-w", str(ws), "export", run.name, str(out), "--force"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(out) in err and "never" in err, err
    assert listing(tmp_path / "elsewhere") == before
    assert not (other / "exported").exists()


def test_export_inside_the_workspace_but_outside_its_folders_is_fine(own_ws, capsys):
    ws, run = own_ws
    code, _, err = run_cli(["-w", str(ws), "export", run.name, str(ws / "exports" / "a")], capsys)
    assert code == 0, err
    assert (ws / "exports" / "a" / "model.safetensors").is_file()


def test_force_onto_a_symbolic_link_replaces_the_link_and_leaves_nothing_behind(own_ws, tmp_path, capsys):
    ws, run = own_ws
    target = tmp_path / "target"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    link = tmp_path / "model"
    link.symlink_to(target, target_is_directory=True)
    code, _, err = run_cli(["-w", str(ws), "export", run.name, str(link), "--force"], capsys)
    assert code == 0, err
    assert not link.is_symlink() and (link / "model.safetensors").is_file()
    assert (target / "notes.txt").read_text() == "mine"  # what the link pointed to is not deleted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "target", "ws"]  # no .model.old-PID


def test_export_into_a_folder_it_cannot_write_is_one_line(own_ws, tmp_path, capsys):
    ws, run = own_ws
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (unwritable_dir(tmp_path) / "tuneterm-export", afile / "out"):
        code, stdout, err = run_cli(["-w", str(ws), "export", run.name, str(out)], capsys)
        assert code == 2, (out, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "cannot write" in err, err
        assert str(out.parent) in err and not out.exists() and stdout == ""
