"""Session files: schema, validation, TOML load/save, the edit log (no torch, no textual).

The public API::

    load_session(path, workspace=None) -> Session            raises SessionError
    loads_session(text, filename="<string>", workspace=None) -> Session
    check_session_file(path, workspace=None) -> (Session | None, [Problem])
    dumps_session(session) -> str;  save_session(session, path)      atomic
    validate_layer_names(session, known_layer_names) -> [Problem]
    check_set_values(values, session=None) -> ["key: message", ...]  live edits
    coerce_value(key, text) -> value                                 `key=value` arguments
"""

from tuneterm.session.check import apply_set_values, check_set_values, coerce_value, validate_layer_names
from tuneterm.session.io import (
    check_session_file,
    check_session_text,
    dumps_session,
    load_session,
    loads_session,
    save_session,
)
from tuneterm.session.problems import Problem, SessionError
from tuneterm.session.schema import EDITABLE, SECTIONS, Edit, Session

__all__ = [
    "EDITABLE",
    "SECTIONS",
    "Edit",
    "Problem",
    "Session",
    "SessionError",
    "apply_set_values",
    "check_session_file",
    "check_session_text",
    "check_set_values",
    "coerce_value",
    "dumps_session",
    "load_session",
    "loads_session",
    "save_session",
    "validate_layer_names",
]
