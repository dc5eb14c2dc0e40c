"""`tuneterm eval` and `predict` for causal-LM runs: the task's metrics (loss, perplexity,
token accuracy) on a file in the run's [data] format, and a greedy completion per row."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from tuneterm.engine import lm_data as LM
from tuneterm.engine import lm_records as R
from tuneterm.errors import UserError


def _task(run):
    from tuneterm.engine.tasks import get_task

    return get_task(run.session)


def evaluate_lm_file(run, path: Path) -> dict:
    """The run's own evaluation (the causal-LM task's ``evaluate``) on every record of ``path``."""
    s = copy.deepcopy(run.session)
    full = str(Path(path).absolute())
    s.data.source, s.data.validation = full, full  # the whole file is the evaluation set
    s.data.max_samples = s.data.max_eval_samples = 0
    task = _task(run)
    data = task.load_data(s, run.workspace, run.tokenizer)
    res = task.evaluate(run.model, data, run.device, run.eval_batch_size())
    return {"run": run.run_dir.name, "checkpoint": run.checkpoint.name, "step": run.step, "data": str(path),
            "examples": len(data.val), "loss": res["val_loss"], "perplexity": res["val_perplexity"],
            "token_accuracy": res["val_token_accuracy"]}


def _prompt(where: str, obj: dict, fmt: str, spec, tok) -> str:
    """What generation starts from: the text, the prompt, or the conversation up to (not
    including) its last assistant turn, rendered with the chat template."""
    if fmt == "text":
        return R.string_field(where, obj, spec.text_field)
    if fmt == "prompt-completion":
        if spec.prompt_template:
            try:
                return spec.prompt_template.format_map(obj)
            except KeyError as e:
                raise UserError(f"{where}: {e.args[0]}: missing (data.prompt_template uses it)") from None
        return R.string_field(where, obj, spec.prompt_field)
    msgs = obj.get(spec.messages_field)
    if isinstance(msgs, str):
        try:
            msgs = json.loads(msgs)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: {spec.messages_field}: not JSON: {e.msg}") from None
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
        raise UserError(f"{where}: {spec.messages_field}: expected a non-empty list of {{role, content}}")
    if msgs[-1].get("role") == "assistant":
        msgs = msgs[:-1]  # the reference answer: generate it instead
    return LM._chat(tok, [{"role": m["role"], "content": str(m.get("content", ""))} for m in msgs], generation=True,
                    where=where)


def prompt_format(raw: list, spec) -> str:
    """The records' format: the session's, or told from the first record (a prompt alone,
    without its completion, is a prompt-completion record here)."""
    if spec.format != "auto":
        return spec.format
    first = raw[0][1]
    if spec.prompt_field in first and spec.messages_field not in first:
        return "prompt-completion"
    return R.detect_format(first, spec)


def complete_file(run, path: Path, max_new_tokens: int | None, make_progress=None,
                  prompt_ids=None) -> tuple[list, list]:
    """(output rows, input columns): each input record with ``output``, the greedy
    continuation of its prompt (at most ``max_new_tokens``, default the session's).
    ``make_progress(total, what)``: a progress callable with ``close()`` (progress.Progress).
    ``prompt_ids(where, record)``: the prompt's tokens (default: the causal-LM formats')."""
    from tuneterm.engine.generate import greedy

    spec, tok = run.session.data, run.tokenizer
    raw = R.read_records(Path(path), str(path))
    if prompt_ids is None:
        fmt = prompt_format(raw, spec)

        def prompt_ids(where, obj):
            return tok(_prompt(where, obj, fmt, spec, tok), add_special_tokens=False)["input_ids"]
    columns: list = []
    for _, obj in raw:
        columns += [k for k in obj if k not in columns]
    if "output" in columns:
        raise UserError(f"{path}: already has a column 'output' (predict adds it)")
    n_new = max_new_tokens or run.session.evaluation.max_new_tokens
    out = []
    progress = make_progress(len(raw), "generate") if make_progress else None
    for i, (where, obj) in enumerate(raw):
        new = greedy(run.model, prompt_ids(where, obj), n_new, tok.eos_token_id, run.device)
        out.append({**obj, "output": tok.decode(new, skip_special_tokens=True)})
        if progress:
            progress(i + 1)
    if progress:
        progress.close()
    return out, columns
