"""`tuneterm layers`: the layer groups of a session's model as the session starts them —
full fine-tuning or LoRA (adapter and base parameters per group, what trains), tied
weights explained — from a weightless (meta-device) copy of the model."""

from __future__ import annotations

from pathlib import Path

from tuneterm.errors import UserError
from tuneterm.session.tasks import task_spec


def meta_model(session, workspace: Path | None):
    """A weightless (meta-device) copy of the session's model, with the head of its task."""
    from tuneterm.engine import models

    tok = models.load_tokenizer(session.model.source, workspace)
    if task_spec(session.model.task).model == "causal-lm":
        return models.build_causal_lm(session.model.source, tokenizer=tok, workspace=workspace, meta=True)
    return models.build_model(session.model.source, 2, tokenizer=tok, workspace=workspace, meta=True)


def session_groups(session, workspace: Path | None) -> list:
    """The groups with the session's starting state: adapters attached when [lora] is
    enabled, lora.train_base and freeze.layers applied. Unknown names: one-line UserError."""
    from tuneterm.engine import dropout as drop
    from tuneterm.engine import layers as L

    model = meta_model(session, workspace)
    if session.lora.enabled:
        from tuneterm.engine import lora

        model = lora.attach(model, session, drop.DropoutContext(session.session.seed), "torch")
    groups = L.layer_groups(model)
    names = L.group_names(groups)
    for key, wanted in (("lora.train_base", session.lora.train_base if session.lora.enabled else []),
                        ("freeze.layers", session.freeze.layers)):
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise UserError(f"{key}: unknown layer group {unknown[0]!r}; this model has {', '.join(names)}")
    if session.lora.enabled:
        L.set_train_base(groups, session.lora.train_base)
    L.set_frozen(groups, session.freeze.layers, True)
    return groups


def layer_report(session, workspace: Path | None) -> dict:
    """{"layers": describe rows, "total_params", "trainable_params", "lora", "tied"}."""
    from tuneterm.engine import layers as L

    groups = session_groups(session, workspace)
    rows = L.describe(groups)
    return {"layers": rows, "total_params": sum(r["params"] for r in rows),
            "trainable_params": sum(r["trainable"] for r in rows), "lora": L.is_lora(groups),
            "tied": L.tied_note(groups)}


def trains(row: dict) -> str:
    """What of a group trains, in words (the `tuneterm layers` and TUI column)."""
    if row["frozen"]:
        return "frozen"
    if "adapter_params" not in row:
        return "all" if row["trainable"] == row["params"] else f"{row['trainable']:,} of {row['params']:,}"
    if row["train_base"]:
        return "adapters + base"
    return "adapters" if row["adapter_params"] else "nothing (no adapters)"
