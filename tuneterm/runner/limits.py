"""A session's limits the daemon enforces, read from its frozen session.toml (no torch).

    [runtime]
    max_wall_s = 0       # seconds one attempt may train (0: no limit); then it is paused at a
                         # checkpoint and marked failed ("wall-clock limit"); `queue retry` continues
    heartbeat_s = 900    # seconds without a sign of life (a line on stdout, a write to
                         # metrics/events/log) after which the worker is hung: killed, counted as
                         # a crash, its slot freed (0: never)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuneterm.rundir import RunDir

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

HEARTBEAT_S = 900.0


@dataclass(frozen=True)
class Limits:
    max_wall_s: float = 0.0
    heartbeat_s: float = HEARTBEAT_S


def read_limits(run_dir: Path) -> Limits:
    """The limits of the run; bad or missing values fall back to the defaults (the
    session's schema checks them before it is queued)."""
    try:
        with open(RunDir(run_dir).session, "rb") as fh:
            rt = tomllib.load(fh).get("runtime", {})
    except (OSError, tomllib.TOMLDecodeError):
        return Limits()
    out = {}
    for key in ("max_wall_s", "heartbeat_s"):
        v = rt.get(key) if isinstance(rt, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
            out[key] = float(v)
    return Limits(**out)
