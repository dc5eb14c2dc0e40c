"""What a finished run is used for, once loaded at a checkpoint (loaded.py): score it on a
file it never saw (`tuneterm eval`), predict on new rows (`tuneterm predict`), the
validation confusion matrix the session screen shows. Classification's side is here, a
generative task's in predict_lm.py; the task picks (tasks/: evaluate_file, predict_file).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

from tuneterm.engine import data as D
from tuneterm.engine import metrics as M
from tuneterm.engine import tables
from tuneterm.engine.loaded import LoadedRun, load_run
from tuneterm.engine.progress import Progress
from tuneterm.errors import ExitCode, UserError
from tuneterm.rundir import RunDir, write_atomic


# ---------------------------------------------------------------------------- inference

def class_logits(run: LoadedRun, enc: D.Encoded, batch_size: int | None = None, progress=None) -> tuple:
    """(logits, summed loss) of a classification run's model on ``enc``, batched as the run's
    own evaluation batches them (metrics.class_logits)."""
    return M.class_logits(run.model, enc, run.tokenizer.pad_token_id, run.device, batch_size or run.eval_batch_size(),
                          progress)


def class_report(run: LoadedRun, enc: D.Encoded) -> dict:
    """metrics.report of a classification run's model on the labelled examples ``enc``."""
    logits, loss_sum = class_logits(run, enc)
    return M.report(logits, enc.labels, loss_sum, run.label_names)


def evaluate_file(run: LoadedRun, path: Path) -> dict:
    """`tuneterm eval`: the task's metrics on a labelled .csv/.jsonl (the [data] format rules)."""
    spec = run.session.data
    split = D.read_file(path, spec.text_field, spec.label_field, what=str(path))
    unknown = sorted(set(split.labels) - set(run.label_names))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise UserError(f"{path}: labels unknown to the run: {shown} (the run knows {', '.join(run.label_names)})")
    enc = D.encode(split, run.tokenizer, run.label_names, spec.max_length)
    out = class_report(run, enc)
    return {"run": run.run_dir.name, "checkpoint": run.checkpoint.name, "step": run.step, "data": str(path), **out}


def validation_confusion(run: LoadedRun) -> dict:
    """The confusion matrix on the run's own validation split (the session screen's picture)."""
    corpus = D.load_corpus(run.session.data, run.workspace, run.session.session.seed)
    enc = D.encode(corpus.val, run.tokenizer, run.label_names, run.session.data.max_length)
    rep = class_report(run, enc)
    return {"checkpoint": run.checkpoint.name, "step": run.step, "accuracy": rep["accuracy"], **rep["confusion"]}


# ---------------------------------------------------------------------------- predict

def read_rows_file(path: Path, need: str) -> tuple[list[dict], list[str]]:
    """Rows of a .csv (header) or .jsonl (objects), and the column names in order."""
    if tables.is_table(path):  # .parquet, a datasets folder
        columns, rows = tables.records(path)
        tables.need_columns(path, columns, [(None, need)])
        return [r for _, r in rows], columns
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    rows: list[dict] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:  # a byte-order mark is not part of a name
            if path.suffix.lower() == ".csv":
                reader = csv.DictReader(fh)
                columns = list(reader.fieldnames or [])
                D.check_columns(columns, path)
                if need not in columns:
                    raise UserError(f"{path}: no column {need!r} (columns: {', '.join(columns) or 'none'})")
                rows = [dict(r) for r in reader]
            else:
                columns = []
                for lineno, obj in D.json_lines(fh, path):
                    if not isinstance(obj, dict) or need not in obj:
                        raise UserError(f"{path}:{lineno}: needs the key {need!r}")
                    columns += [k for k in obj if k not in columns]
                    rows.append(obj)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise UserError(f"{path}: bad CSV: {e}") from None
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows, columns


def predict_rows(run: LoadedRun, rows: list[dict], *, probs: bool = False, batch_size: int | None = None,
                 progress=None) -> list[dict]:
    """Each input row with ``prediction`` (the label), ``probability`` and, with ``probs``,
    ``probs`` ({label: probability})."""
    spec = run.session.data
    texts = ["" if r.get(spec.text_field) is None else str(r[spec.text_field]) for r in rows]
    ids = run.tokenizer(texts, truncation=True, max_length=spec.max_length)["input_ids"]
    logits, _ = class_logits(run, D.Encoded(ids, np.zeros(len(ids), dtype=np.int64)), batch_size, progress)
    p = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
    out = []
    for r, pr in zip(rows, p):
        c = int(pr.argmax())
        o = {**r, "prediction": run.label_names[c], "probability": float(pr[c])}
        if probs:
            o["probs"] = {name: float(v) for name, v in zip(run.label_names, pr)}
        out.append(o)
    return out


def classify_file(run: LoadedRun, path: Path, probs: bool, make_progress=None) -> tuple[list, list]:
    """(output rows, input columns) of a classification run's predictions for a file."""
    rows, columns = read_rows_file(path, run.session.data.text_field)
    taken = [c for c in ("prediction", "probability") if c in columns]
    if taken:
        raise UserError(f"{path}: already has a column {taken[0]!r} (predict adds it)")
    bar = Progress(len(rows), "predict", min_total=200)
    try:
        return predict_rows(run, rows, probs=probs, progress=bar), columns
    finally:
        bar.close()


def write_predictions(out_rows: list[dict], columns: list[str], fmt: str, fh) -> None:
    """CSV (the input columns, then the added ones: prediction, probability, prob_<label>...;
    completion) or JSON lines."""
    if fmt == "jsonl":
        for r in out_rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        return
    extra = [k for k in (out_rows[0] if out_rows else {}) if k not in columns and k != "probs"]
    if out_rows and "probs" in out_rows[0]:
        extra += [f"prob_{k}" for k in out_rows[0]["probs"]]
    writer = csv.DictWriter(fh, fieldnames=[c for c in columns if c not in extra] + extra, extrasaction="ignore")
    writer.writeheader()
    for r in out_rows:
        flat = {k: v for k, v in r.items() if k != "probs"}
        for k, v in (r.get("probs") or {}).items():
            flat[f"prob_{k}"] = v
        writer.writerow(flat)


def predict_file(run: LoadedRun, path: Path, out: Path | None, *, probs: bool = False,
                 max_new_tokens: int | None = None) -> int:
    """`tuneterm predict`: one output row per input row; CSV in CSV out, JSONL in JSONL out.
    ``out`` is written atomically (a temporary file renamed); None: stdout."""
    from tuneterm.engine.tasks import get_task

    result, columns = get_task(run.session).predict_file(
        run, path, probs=probs, max_new_tokens=max_new_tokens,
        make_progress=lambda n, what: Progress(n, what, min_total=20))
    fmt = "csv" if path.suffix.lower() == ".csv" else "jsonl"
    if out is None:
        write_predictions(result, columns, fmt, sys.stdout)
        return len(result)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            write_predictions(result, columns, fmt, fh)
        os.replace(tmp, out)
    except OSError as e:
        raise UserError(f"--out {out}: cannot write ({e.strerror or e})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return len(result)


def check_out(out: Path) -> None:
    """Before any work: ``--out`` names a file that can be written (not a folder, in a folder
    that exists and is writable)."""
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder (give a file name)")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: no such folder {out.parent}")
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"--out {out}: cannot write into {out.parent} (permission denied)")


def fmt_metric(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) and math.isfinite(v) else str(v)


# ---------------------------------------------------------------------------- the TUI's picture

def write_confusion(run_dir: Path, workspace: Path, which: str = "best") -> Path:
    """RUN_DIR/confusion.json: the validation confusion matrix at a checkpoint, for the
    session screen (which never imports torch: it starts this in a subprocess)."""
    res = validation_confusion(load_run(run_dir, workspace, which))
    path = RunDir(run_dir).confusion
    write_atomic(path, json.dumps(res), durable=False)
    return path


def main(argv: list[str] | None = None) -> int:
    """python -m tuneterm.engine.predict confusion RUN_DIR WORKSPACE"""
    from tuneterm.errors import TunetermError

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] != "confusion":
        sys.stderr.write("usage: python -m tuneterm.engine.predict confusion RUN_DIR WORKSPACE\n")
        return ExitCode.BAD_INPUT
    try:
        print(write_confusion(Path(args[1]), Path(args[2])))
    except TunetermError as e:
        sys.stderr.write(f"{e}\n")
        return e.exit_code
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())
