"""The engine's tasks, by ``[model] task`` (see tasks/base.py for the seam). Which module
holds a task is its row of the task table (tuneterm/session/tasks.py)."""

from __future__ import annotations

import importlib

from tuneterm.errors import UserError
from tuneterm.session.tasks import TASK_TABLE

# name -> (module, class); modules are imported only when their task is used.
REGISTRY = {name: spec.engine for name, spec in TASK_TABLE.items()}


def get_task(session):
    """A fresh task object for the session (tasks hold what they learn from the data)."""
    name = session.model.task
    if name not in REGISTRY:
        raise UserError(f"model.task: unknown task {name!r}; expected one of {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name]
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise UserError(f"model.task: task {name} is not available in this version") from None
    return getattr(mod, cls)()
