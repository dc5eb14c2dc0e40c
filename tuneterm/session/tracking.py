"""Which trackers a run writes: its session's ``[tracking]`` over the workspace's.

``WS/.tuneterm/config.toml`` may hold a ``[tracking]`` table with the keys of the session's
(docs/tracking.md). A session key left at its default takes the workspace's value, unless
the session says ``inherit = false``; so a workspace can send every run to one MLflow
store while a session adds TensorBoard. The workspace table is checked like a session's:
every problem is a ``Problem`` naming config.toml and the line. No torch, no textual.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tuneterm.session.check import FIELDS, check_value, did_you_mean
from tuneterm.session.locate import Locator
from tuneterm.session.problems import Problem, SessionError
from tuneterm.session.schema import TrackingSpec

WORKSPACE_KEYS = ("tensorboard", "mlflow", "experiment")  # `inherit` means nothing there


def config_file(workspace: Path) -> Path:
    return Path(workspace) / ".tuneterm" / "config.toml"


def workspace_tracking(workspace: Path | None) -> tuple[dict, list[Problem]]:
    """The checked keys of the workspace's ``[tracking]`` ({} when there is none), and
    every problem with config.toml's line. Other tables of the file are the runner's."""
    if workspace is None:
        return {}, []
    path = config_file(workspace)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, []
    except (OSError, UnicodeDecodeError) as e:
        return {}, [Problem(str(path), 1, "tracking", f"cannot read: {e}")]
    try:
        table = tomllib.loads(text).get("tracking")
    except tomllib.TOMLDecodeError as e:
        return {}, [Problem(str(path), 1, "syntax", str(e))]
    if table is None:
        return {}, []
    loc = Locator(text)
    if not isinstance(table, dict):
        return {}, [Problem(str(path), loc.line("tracking"), "tracking", "expected a table [tracking]")]
    out: dict = {}
    problems = []
    for key, value in table.items():
        where = f"tracking.{key}"
        if key not in WORKSPACE_KEYS:
            hint = did_you_mean(key, WORKSPACE_KEYS) or f"; [tracking] here has: {', '.join(WORKSPACE_KEYS)}"
            problems.append(Problem(str(path), loc.line(where), where, "unknown key" + hint))
            continue
        conv, msg = check_value(FIELDS["tracking"][key], value)
        if msg:
            problems.append(Problem(str(path), loc.line(where), where, msg))
        else:
            out[key] = conv
    return out, problems


def effective_tracking(session, workspace: Path | None) -> TrackingSpec:
    """The trackers a run of ``session`` writes; raises ``SessionError`` (file:line) on a
    malformed workspace table that the session would take keys from."""
    own = session.tracking
    if not own.inherit:
        return dataclasses.replace(own)
    defaults, problems = workspace_tracking(workspace)
    if problems:
        raise SessionError(problems)
    plain = TrackingSpec()
    merged = {f.name: getattr(own, f.name) for f in dataclasses.fields(TrackingSpec)}
    for key, value in defaults.items():
        if merged[key] == getattr(plain, key):
            merged[key] = value
    return TrackingSpec(**merged)


def resolve_mlflow_uri(uri: str, workspace: Path | None) -> str:
    """A relative path or ``sqlite:///relative.db`` starts at the workspace (the worker's
    current directory is not the user's); other URIs are MLflow's to read."""
    if not uri or workspace is None:
        return uri
    if uri.startswith("sqlite:///"):
        rest = uri[len("sqlite:///"):]
        if rest and not rest.startswith("/") and not rest.startswith(":memory:"):
            return "sqlite:///" + str(Path(workspace) / rest)
        return uri
    if uri.startswith(("file:", "http:", "https:", "databricks", "postgresql", "mysql", "mssql")):
        return uri
    p = Path(uri).expanduser()
    return str(p if p.is_absolute() else Path(workspace) / p)
