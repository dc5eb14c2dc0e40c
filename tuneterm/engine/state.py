"""TrainState: everything a run's progress is, and exactly what a checkpoint's
``state.json`` holds (beside ``"format"``, which tuneterm.engine.checkpoint adds).

The weights and optimizer moments go to safetensors files; this is the rest — where the
run is in its data, the knobs as currently edited, the edit-log position, early stopping.
A resume rebuilds the trainer from the session and then loads one of these: nothing
else of the previous attempt is needed.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

from tuneterm.engine.early_stop import EarlyStopping
from tuneterm.engine.plan import Position
from tuneterm.session.schema import Hyperparameters


@dataclass
class TrainState:
    step: int  # optimizer steps done
    epoch: int
    cursor: int  # units of this epoch's order trained on
    samples_seen: int
    total_steps: int  # the plan's total with the current knobs (recomputed on edits)
    edits_applied: int  # entries of the session's edit log applied so far
    hyperparameters: Hyperparameters  # as currently edited
    frozen: list  # frozen layer groups
    early_stopping: EarlyStopping
    last_eval_step: int
    kernels: str  # "torch" | "triton": what the attempt that wrote it trained with (a resume elsewhere may differ)
    dtype: str
    optimizer: dict = field(default_factory=dict)  # the optimizer's scalars (filled when saving)
    lora: dict = field(default_factory=dict)  # LoRA's live knobs as edited (dropout, lr_ratio, train_base)
    lora_fingerprint: str | None = None  # of the base weights, when LoRA adapters train
    task_knobs: dict = field(default_factory=dict)  # the task's live knobs as edited (preference: beta, sft_weight)

    @property
    def position(self) -> Position:
        return Position(self.step, self.epoch, self.cursor)

    def move_to(self, pos: Position) -> None:
        self.step, self.epoch, self.cursor = pos.step, pos.epoch, pos.cursor

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "hyperparameters":
                v = dataclasses.asdict(v)
            elif f.name == "early_stopping":
                v = v.state_dict()
            elif f.name == "frozen":
                v = list(v)
            out[f.name] = v
        return out

    def load_json(self, d: dict) -> None:
        """Take a checkpoint's state (a dict from state.json) in place; ValueError naming
        the first missing field. A round-1 state (``patience`` top-level, ``last_eval_step``
        inside ``early_stopping``) is read too."""
        d = _from_round1(d)
        for name in FIELDS:
            if name not in d and name not in OPTIONAL:
                raise ValueError(f"state.json: missing {name!r}")
        for name in FIELDS:
            v = d[name] if name in d else copy.deepcopy(OPTIONAL[name])
            if name == "hyperparameters":
                v = Hyperparameters(**v)
            elif name == "early_stopping":
                self.early_stopping.load_state_dict(v)
                continue
            setattr(self, name, v)


# The checkpoint fields, listed once (from the dataclass); those a checkpoint may lack.
FIELDS = tuple(f.name for f in dataclasses.fields(TrainState))
OPTIONAL = {"lora": {}, "lora_fingerprint": None, "task_knobs": {}}


def _from_round1(d: dict) -> dict:
    """Round 1 kept ``patience`` beside the early-stopping state and ``last_eval_step``
    inside it; the same facts, moved to where TrainState has them."""
    es = d.get("early_stopping")
    if not isinstance(es, dict) or ("patience" not in d and "last_eval_step" not in es):
        return d
    d, es = dict(d), dict(es)
    if "patience" in d and "patience" not in es:
        es["patience"] = d.pop("patience")
    if "last_eval_step" in es and "last_eval_step" not in d:
        d["last_eval_step"] = es.pop("last_eval_step")
    d["early_stopping"] = es
    return d
