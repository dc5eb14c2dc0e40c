"""The TUI never imports torch or transformers (start-up stays fast; DESIGN.md)."""

import subprocess
import sys

MODULES = ["tuneterm.tui.app", "tuneterm.tui.queue_screen", "tuneterm.tui.session_screen",
           "tuneterm.tui.replay_screen", "tuneterm.tui.new_session", "tuneterm.tui.help_screen",
           "tuneterm.tui.dialogs", "tuneterm.tui.panels", "tuneterm.tui.chart", "tuneterm.tui.data",
           "tuneterm.tui.knobs", "tuneterm.tui.stream", "tuneterm.cli.tui_verbs"]


def test_tui_modules_never_import_torch_or_transformers():
    code = (
        "import importlib, sys\n"
        f"for m in {MODULES!r}:\n"
        "    importlib.import_module(m)\n"
        "import tuneterm.tui.knobs as k; k.check_knob('learning_rate', '2e-5')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'triton'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the TUI imported: {out.stdout.strip()}"


def test_data_layer_never_imports_textual():
    code = ("import sys, tuneterm.tui.data, tuneterm.tui.series, tuneterm.tui.knobs\n"
            "print(','.join(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
