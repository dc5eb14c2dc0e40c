"""`tuneterm eval` and `predict` for preference runs: the task's metrics (reward accuracy
and margin, ...) on a file of pairs against the run's reference model, and a greedy
completion of each row's prompt."""

from __future__ import annotations

import copy
from pathlib import Path

from tuneterm.engine import lm_data as LM
from tuneterm.engine import pref_data as PD
from tuneterm.engine import pref_reference as REF


def evaluate_pairs_file(task, run, path: Path) -> dict:
    """The run's own evaluation on every pair of ``path``. The reference is the run's: none
    for simpo/orpo, else the model the run started from — rebuilt from its source, so that
    base weights a LoRA run trained (or a precomputed cache elsewhere) make no difference."""
    from tuneterm.engine.models import build_causal_lm

    s = copy.deepcopy(run.session)
    full = str(Path(path).absolute())
    s.data.source, s.data.validation = full, full  # the whole file is the evaluation set
    s.data.max_samples = s.data.max_eval_samples = 0
    data = task.load_data(s, run.workspace, run.tokenizer)
    if REF.kind(s.preference, lora=False) != "none":
        base = build_causal_lm(s.model.source, tokenizer=run.tokenizer, workspace=run.workspace, seed=s.session.seed)
        dtype = next(run.model.parameters()).dtype
        task.frozen, task.reference = base.to(device=run.device, dtype=dtype).eval(), "frozen-copy"
    res = task.evaluate(run.model, data, run.device, run.eval_batch_size())
    return {"run": run.run_dir.name, "checkpoint": run.checkpoint.name, "step": run.step, "data": str(path),
            "examples": len(data.val), "reference": task.reference,
            **{k.removeprefix("val_"): v for k, v in res.items()}}


def prompt_ids(where: str, obj: dict, spec, tok) -> list:
    """A row's prompt as training tokenised it: the prompt field, or the shared opening of
    chosen and rejected; a string's trailing special tokens (WordPiece's [SEP]) are left off,
    as the completion follows the prompt's text there."""
    if spec.prompt_field in obj:
        prompt = PD._value(where, obj, spec.prompt_field)
    else:
        chosen, rejected = PD._value(where, obj, spec.chosen_field), PD._value(where, obj, spec.rejected_field)
        prompt = PD._shared_prompt(where, chosen, rejected, spec)[0]
    if isinstance(prompt, list):
        return tok(LM._chat(tok, prompt, True, where=where), add_special_tokens=False)["input_ids"]
    ids = tok(prompt)["input_ids"]
    special = set(tok.all_special_ids)
    while ids and ids[-1] in special:
        ids = ids[:-1]
    return ids


def complete_pairs_file(run, path: Path, max_new_tokens: int | None, make_progress=None) -> tuple[list, list]:
    """(output rows, input columns): each input row with ``output``, the greedy completion
    of its prompt (at most ``max_new_tokens``, default the session's)."""
    from tuneterm.engine.predict_lm import complete_file

    spec, tok = run.session.data, run.tokenizer
    return complete_file(run, path, max_new_tokens, make_progress,
                         prompt_ids=lambda where, obj: prompt_ids(where, obj, spec, tok))
