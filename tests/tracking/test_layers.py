"""`tuneterm track` and the trackers stay out of torch and textual; the TUI and the daemon
never load a tracker's package (their start-up is as fast as before)."""

from __future__ import annotations

import json
import subprocess
import sys


def _loaded(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\n"
                          "print(json.dumps(sorted({k.split('.')[0] for k in sys.modules})))"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_trackers_and_the_track_verb_load_no_torch_nor_textual():
    loaded = _loaded("import tuneterm.tracking.offline, tuneterm.tracking.sink, tuneterm.tracking.tb, "
                     "tuneterm.tracking.mlflow_run, tuneterm.cli.track_verbs")
    assert not loaded & {"torch", "transformers", "peft", "textual", "rich"}, loaded
    assert not loaded & {"tensorboard", "mlflow", "pyarrow", "datasets"}  # imported when a run uses them


def test_the_tui_and_the_daemon_load_no_tracker_package():
    loaded = _loaded_modules("import tuneterm.runner.daemon, tuneterm.tui.app\n"
                             "from tuneterm.cli import build_parser\nbuild_parser()")
    tops = {m.split(".")[0] for m in loaded}
    assert not tops & {"tensorboard", "mlflow", "pyarrow", "datasets"}, sorted(tops)
    assert not {m for m in loaded if m.startswith("tuneterm.tracking")}


def _loaded_modules(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))
