"""The registry of tasks, by ``[model] task`` (see tasks/base.py for the seam)."""

from __future__ import annotations

import importlib

from tuneterm.errors import UserError

# name -> (module, class); modules are imported only when their task is used.
REGISTRY = {
    "sequence-classification": ("tuneterm.engine.tasks.classification", "SequenceClassificationTask"),
    "causal-lm": ("tuneterm.engine.tasks.causal_lm", "CausalLMTask"),
}


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
