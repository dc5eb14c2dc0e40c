"""benchmarks/_sides.py, the side-by-side drivers' shared runner: each side in its own process,
the first side rotating per repeat, a failed side reported and left out (or fatal when
required), the driver's own options not passed on."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _sides():
    spec = importlib.util.spec_from_file_location("bench_sides", ROOT / "benchmarks" / "_sides.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SIDE = """\
import sys
sys.path.insert(0, {bench!r})
import _sides
args = sys.argv[1:]
side = args[args.index("--side") + 1]
with open({log!r}, "a") as fh:
    fh.write(side + " " + " ".join(args[2:]) + "\\n")
if side == "broken":
    sys.exit("it broke")
_sides.emit({{"side": side}})
"""


def test_sides_rotate_run_apart_and_a_failure_is_left_out(tmp_path: Path, capsys):
    s = _sides()
    log = tmp_path / "order.txt"
    script = tmp_path / "side.py"
    script.write_text(SIDE.format(bench=str(ROOT / "benchmarks"), log=str(log)))
    argv = s.options(argparse.Namespace(steps=3, max_length=8, repeats=2, sides="a,b", side=None))
    assert argv == ["--steps", "3", "--max-length", "8"]
    got = s.run_sides(str(script), ["a", "b", "broken"], 3, argv)
    assert [ln.split()[0] for ln in log.read_text().splitlines()] == \
        ["a", "b", "broken", "b", "broken", "a", "broken", "a", "b"]
    assert all(ln.endswith("--steps 3 --max-length 8") for ln in log.read_text().splitlines())
    assert [r["side"] for r in got["a"]] == ["a"] * 3 and got["broken"] == []
    assert all(r["peak_rss_mb"] > 0 for r in got["b"])
    assert capsys.readouterr().err.count("broken: failed (exit 1)") == 3
    with pytest.raises(SystemExit, match="it broke"):
        s.run_sides(str(script), ["broken"], 1, argv, required=True)
