"""What of the model a checkpoint holds: every weight, or with LoRA only what trains.

``ModelWeights`` has the two methods tuneterm.engine.checkpoint calls on a model
(``state_dict`` / ``load_state_dict``), so checkpoints need not know about adapters.
With ``[lora] enabled``, tuneterm.engine.lora says which tensors train
(``checkpoint_tensors``); the frozen base weights are rebuilt from the model source on
resume, and the base's fingerprint in the TrainState proves it is the same base.
"""

from __future__ import annotations

import importlib


def lora_module(session):
    """tuneterm.engine.lora when the session trains LoRA adapters, else None."""
    spec = getattr(session, "lora", None)
    if spec is None or not getattr(spec, "enabled", False):
        return None
    try:
        mod = importlib.import_module("tuneterm.engine.lora")
    except ModuleNotFoundError as e:
        if e.name != "tuneterm.engine.lora":
            raise
        mod = None
    if mod is None or not all(hasattr(mod, f) for f in ("attach", "checkpoint_tensors", "load_tensors", "fingerprint")):
        from tuneterm.errors import UserError

        raise UserError("lora.enabled: LoRA adapters are not available in this version")
    return mod


class ModelWeights:
    def __init__(self, model, groups, lora=None) -> None:
        self.model, self.groups, self.lora = model, groups, lora

    def state_dict(self) -> dict:
        if self.lora is None:
            return self.model.state_dict()
        return self.lora.checkpoint_tensors(self.model, self.groups)

    def load_state_dict(self, tensors: dict, strict: bool = True):
        if self.lora is None:
            return self.model.load_state_dict(tensors, strict=strict)
        return self.lora.load_tensors(self.model, self.groups, tensors)  # checks names, copies in place
