"""log.txt: one human-readable line per event worth reading (events.jsonl has them all).

The trainer passes every event row here and logs the line (logger ``tuneterm.engine``,
configured by tuneterm.engine.runs.setup_logging to write the run's log.txt)."""

from __future__ import annotations

import json

from tuneterm.compare import edit_parts


def _num(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _edit(e: dict) -> str:
    return " ".join(edit_parts(e, _num, ","))


def describe(row: dict) -> str | None:
    """The log line for an event row, or None for events not worth a line."""
    kind, step = row.get("kind"), row.get("step")
    if kind in ("start", "resume"):
        head = f"resumed from {row.get('checkpoint')} at step {step}" if kind == "resume" else "started"
        sizes = ", ".join(f"{k.replace('_', ' ')} {row[k]}" for k in row if k.endswith(("_examples", "_rows")))
        labels = row.get("labels")
        return (f"{head}: model {row.get('model')} ({row.get('task')}), {sizes}"
                + (f", {len(labels)} labels ({', '.join(map(str, labels))})" if labels else "")
                + f"; device {row.get('device')}, kernels {row.get('kernels')}; "
                f"{row.get('trainable_params'):,} trainable parameters; {row.get('total_steps')} steps planned")
    if kind == "edit":
        return f"step {step}: edit applied ({row.get('source')}): {_edit(row.get('edit') or {})}"
    if kind == "reject":
        req = row.get("request")
        return f"step {step}: edit rejected: {row.get('reason')}" + (f" (request {json.dumps(req)})" if req else "")
    if kind == "checkpoint":
        return f"step {step}: checkpoint {row.get('path')} ({row.get('reason')})"
    if kind == "eval_best":
        return f"step {step}: new best {row.get('metric')} = {_num(row.get('value'))}"
    if kind == "early_stop":
        return (f"step {step}: early stop: {row.get('metric')} did not improve for {row.get('patience')} "
                f"evaluations (best {_num(row.get('best'))} at step {row.get('best_step')})")
    if kind in ("error", "skip", "warning"):
        return f"step {step}: {row.get('message')}"
    if kind == "end":
        reason = row.get("reason")
        return f"ended at step {step}: {row.get('state')}" + (f" ({reason})" if reason else "")
    return None


def describe_eval(row: dict) -> str:
    metrics = " ".join(f"{k}={_num(v)}" for k, v in row.items() if k.startswith("val_"))
    return f"step {row.get('step')}: evaluation: {metrics}"
