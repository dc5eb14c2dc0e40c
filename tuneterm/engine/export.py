"""`tuneterm export`: a run's checkpoint as a Hugging Face model folder.

    OUT/config.json          the model's config; classifiers carry id2label/label2id with
                             the data's label names
    OUT/model.safetensors    the weights at the chosen checkpoint
    OUT/tokenizer*, vocab*   the tokenizer (with its chat template, where it has one)
    OUT/README.md            a model card: base model, data, the session with its edit log,
                             the validation metrics at that checkpoint, tuneterm's version
    OUT/session.toml         the run's frozen session file

Everything is written into a temporary folder beside OUT and renamed into place at the
end, so a failure midway leaves OUT as it was (absent, or the old folder with --force).
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from pathlib import Path

from tuneterm.engine.loaded import LoadedRun, load_run, metrics_at
from tuneterm.errors import UserError
from tuneterm.session.tasks import task_spec
from tuneterm.rundir import SESSION, RunDir, read_jsonl
from tuneterm.workspace import clash

BASE_HUB_IDS = {"builtin:minilm-l6": "sentence-transformers/all-MiniLM-L6-v2"}


def check_target(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"{out}: not empty (--force replaces it)")


def export_run(run_dir: Path, workspace: Path, out: Path, *, which: str = "best", merge: bool = False,
               force: bool = False) -> dict:
    """Write the folder; returns what was exported (checkpoint, step, files)."""
    out = Path(out).absolute()
    overlap = clash(out, workspace, (("the run", run_dir),))
    if overlap:
        raise UserError(f"{out}: {overlap}; export never writes over or into a workspace's own folders "
                        "or a run: choose another OUT")
    check_target(out, force)
    t0 = time.perf_counter()
    run = load_run(run_dir, workspace, which)
    lora = is_lora(run)
    if merge and not lora:
        raise UserError("--merge applies to LoRA runs only (this run trains the full model)")
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        why = "not a folder" if isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror or str(e)
        raise UserError(f"{out}: cannot write into {out.parent} ({why})") from None
    try:
        if lora and not merge:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PEFT/transformers deprecation notices while saving
                write_adapter(run, tmp)
        else:
            if lora:
                run.model = run.model.merge_and_unload()  # W + (alpha/r) B A, adapters gone
            write_model(run, tmp)
        shutil.copyfile(RunDir(run_dir).session, tmp / SESSION)  # the run's frozen session, by the same name
        (tmp / "README.md").write_text(model_card(run, adapter=lora and not merge), encoding="utf-8")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"run": run_dir.name, "out": str(out), "checkpoint": run.checkpoint.name, "step": run.step,
            "files": sorted(p.name for p in out.iterdir()), "seconds": round(time.perf_counter() - t0, 3),
            "skipped": run.skipped}


def write_model(run: LoadedRun, folder: Path) -> None:
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    disable_progress_bars()  # "Writing model shards" is noise for a one-file model
    hf_logging.disable_progress_bar()
    model = run.model
    if run.label_names:
        model.config.id2label = {i: name for i, name in enumerate(run.label_names)}
        model.config.label2id = {name: i for i, name in enumerate(run.label_names)}
        model.config.problem_type = "single_label_classification"
    else:
        # generate() stops where tuneterm's generation stops: at the tokenizer's end of sequence
        tok = run.tokenizer
        for cfg in (model.config, getattr(model, "generation_config", None)):
            if cfg is not None:
                cfg.eos_token_id, cfg.pad_token_id = tok.eos_token_id, tok.pad_token_id
    model.save_pretrained(str(folder), safe_serialization=True)
    # pipeline(..., truncation=True) then cuts inputs where training did
    run.tokenizer.model_max_length = run.session.data.max_length
    run.tokenizer.save_pretrained(str(folder))


def is_lora(run: LoadedRun) -> bool:
    return bool(getattr(getattr(run.session, "lora", None), "enabled", False))


def write_adapter(run: LoadedRun, folder: Path) -> None:
    """A PEFT adapter folder (adapter_config.json, adapter_model.safetensors, with the
    classifier head as modules_to_save) and, unless the base is a hub id whose weights did
    not train, the base model it applies to in ``base/`` (built-in and local bases are not
    on the loading side): PeftModel.from_pretrained(AutoModelFor*.from_pretrained(OUT/base), OUT)."""
    from tuneterm.engine.models import resolve_source

    src = run.session.model.source
    hub = not src.startswith("builtin:") and not os.path.isabs(resolve_source(src, run.workspace))
    # run.session is the effective one (the edit log applied); a base that trained earlier
    # and was switched off again is in the checkpoint all the same.
    base_trained = bool(run.session.lora.train_base) or checkpoint_holds_base(run.checkpoint)
    peft_model = run.model
    peft_model.peft_config["default"].base_model_name_or_path = src if hub and not base_trained else "base"
    peft_model.save_pretrained(str(folder))
    run.tokenizer.save_pretrained(str(folder))
    if not hub or base_trained:
        # the base weights as they are under the adapters (trained base groups included)
        run.model = peft_model.unload()
        write_model(run, folder / "base")
        run.model = peft_model


def checkpoint_holds_base(checkpoint: Path) -> bool:
    """Whether a LoRA checkpoint holds base weights (of a group that trained beside its adapters)."""
    from tuneterm.engine.checkpoint import tensor_names
    from tuneterm.engine.layers import is_adapter

    return any(not is_adapter(k) for k in tensor_names(checkpoint))


def _swap_into_place(tmp: Path, out: Path) -> None:
    if out.exists() or out.is_symlink():
        trash = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, trash)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(trash, out)
            raise
        if trash.is_symlink():
            trash.unlink()  # the link is replaced; what it pointed to is not ours to delete
        else:
            shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, out)


def _edit_line(e) -> str:
    parts = [f"{k} = {v}" for k, v in e.set.items()]
    if e.freeze:
        parts.append(f"freeze {', '.join(e.freeze)}")
    if e.unfreeze:
        parts.append(f"unfreeze {', '.join(e.unfreeze)}")
    if e.stop:
        parts.append("stop")
    return f"- step {e.step}: " + "; ".join(parts)


def _start_info(run: LoadedRun) -> dict:
    for ev in read_jsonl(RunDir(run.run_dir).events):
        if ev.get("kind") == "start":
            return ev
    return {}


def model_card(run: LoadedRun, adapter: bool = False) -> str:
    import torch
    import transformers

    from tuneterm import __version__
    from tuneterm.engine.models import resolve_source

    s = run.session
    src = s.model.source
    base = BASE_HUB_IDS.get(src, "")
    if not base and not src.startswith("builtin:") and not os.path.isabs(resolve_source(src, run.workspace)):
        base = src  # a hub id
    tag = task_spec(s.model.task).pipeline_tag
    lora = is_lora(run)
    front = ["---", f"library_name: {'peft' if adapter else 'transformers'}", f"pipeline_tag: {tag}", "tags:",
             "- tuneterm", *(["- lora"] if lora else [])]
    if base:
        front.append(f"base_model: {base}")
    front.append("---")
    info = _start_info(run)
    metrics = metrics_at(run.run_dir, run.step)
    lines = [*front, "", f"# {s.name}", "",
             f"Fine-tuned with tuneterm {__version__} from run `{run.run_dir.name}`, "
             f"checkpoint `{run.checkpoint.name}` (optimizer step {run.step}).", "",
             "## Model", "", f"- base model: `{src}`" + (f" ({base})" if base and base != src else ""),
             *([f"- {'DoRA' if s.lora.use_dora else 'LoRA'}: r = {s.lora.r}, alpha = {s.lora.alpha:g}, target modules {s.lora.target_modules}; "
                + ("this folder holds the adapters (base model in `base/` when it is not a hub id)" if adapter
                   else "merged into the weights (--merge)")] if lora else []),
             f"- task: {s.model.task}", f"- dtype: {s.model.dtype}"]
    if run.label_names:
        lines.append(f"- labels (id: name): {', '.join(f'{i}: {n}' for i, n in enumerate(run.label_names))}")
    lines += ["", "## Data", "", f"- source: `{s.data.source}`",
              f"- validation: `{s.data.validation}`" if s.data.validation else
              f"- validation: {s.data.validation_split:g} of the source, split with seed {s.session.seed}",
              f"- max_length: {s.data.max_length} tokens"]
    if info:
        lines.append(f"- examples: {info.get('train_examples')} training, {info.get('val_examples')} validation")
    lines += ["", f"## Validation metrics at step {run.step}", ""]
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"] + [f"| {k} | {v:.4f} |" if isinstance(v, float)
                                                            else f"| {k} | {v} |" for k, v in metrics.items()]
    else:
        lines.append("The run did not evaluate at this step.")
    lines += ["", "## Live edits", ""]
    lines += [_edit_line(e) for e in s.edits] or ["None: the session ran as written."]
    session_text = RunDir(run.run_dir).session.read_text(encoding="utf-8")
    lines += ["", "## Session", "", "The frozen session file (also `session.toml` in this folder; "
              "`tuneterm replay session.toml` re-runs it with its edits):", "", "```toml", session_text.rstrip(),
              "```", "", "## Use", "", "```python", *_usage(run, tag, adapter), "```", "",
              f"Software: tuneterm {__version__}, transformers {transformers.__version__}, torch {torch.__version__}.",
              ""]
    return "\n".join(lines)


def _usage(run: LoadedRun, tag: str, adapter: bool) -> list:
    if not adapter:
        return ["from transformers import pipeline", "",
                f'pipe = pipeline("{tag}", model="PATH/TO/THIS/FOLDER")']
    auto = task_spec(run.session.model.task).export_class
    return ["from peft import PeftModel", f"from transformers import {auto}", "",
            f'base = {auto}.from_pretrained("PATH/TO/THIS/FOLDER/base")  # or the hub id of the base',
            'model = PeftModel.from_pretrained(base, "PATH/TO/THIS/FOLDER")']
