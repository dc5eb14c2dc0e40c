"""`tuneterm export`, `eval`, `predict`, `compare`, `report`: what a run leaves behind."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tuneterm.cli.common import finish, print_json, print_table, workspace_of
from tuneterm.errors import ExitCode, UserError

CHECKPOINT_HELP = ("best (the early-stopping metric's best; default), last (the newest intact one), or step-N; "
                   "each is checked against its manifest first")


def _add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", default="best", metavar="WHICH", help=CHECKPOINT_HELP)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                   help="where to run the model (default: cpu)")


def register(sub) -> None:
    p = sub.add_parser("export", help="a run's checkpoint as a Hugging Face model folder with a model card",
                       description="Write a Hugging Face model folder: config.json (classifiers: id2label/"
                       "label2id with the data's label names), model.safetensors, the tokenizer files, a "
                       "README.md model card (base model, data, session and edit log, validation metrics at "
                       "the checkpoint, tuneterm's version) and the frozen session.toml. Loads offline with "
                       "AutoModelFor*.from_pretrained(OUT) and pipeline(..., model=OUT). OUT is written "
                       "into a temporary folder and renamed: a failed export leaves nothing half-written.")
    p.add_argument("run", help="run directory or run id (a unique prefix)")
    p.add_argument("out", help="the folder to write (must be absent or empty unless --force; never the "
                   "workspace, its runs/, sessions/ or .tuneterm/, or a run)")
    p.add_argument("--merge", action="store_true", help="LoRA runs: merge the adapters into the base model")
    p.add_argument("--force", action="store_true", help="replace a non-empty OUT (a symbolic link: the link)")
    _add_checkpoint(p)
    finish(p, cmd_export)

    p = sub.add_parser("eval", help="a run's metrics on a labelled file it never saw",
                       description="Score a run's checkpoint on a file it never saw, in the run's [data] "
                       "format. Classification (.csv/.jsonl with the session's text and label fields): loss, "
                       "accuracy, macro F1, per-class precision/recall and the confusion matrix; labels the "
                       "run does not know are an error naming them (exit 2). Causal LM (text, "
                       "prompt-completion or messages records): loss, perplexity, token accuracy. Preference "
                       "(pairs of completions): loss, reward accuracy and margin, rewards and log-probs, "
                       "against the run's reference model.")
    p.add_argument("run", help="run directory or run id")
    p.add_argument("data", help="a labelled .csv or .jsonl file")
    _add_checkpoint(p)
    finish(p, cmd_eval)

    p = sub.add_parser("predict", help="a run's predictions for each row of a file",
                       description="One output row per input row, keeping the input's columns. "
                       "Classification: plus `prediction` (the label) and `probability` (with --probs every "
                       "class's probability: prob_<label> columns in CSV, a `probs` object in JSONL). Causal "
                       "LM: plus `output`, the greedy completion of the row's prompt (its text, prompt, or "
                       "conversation before the last assistant turn); preference: the same from each pair's "
                       "prompt. CSV in, CSV out; JSONL in, JSONL out. "
                       "A progress bar on stderr for long files.")
    p.add_argument("run", help="run directory or run id")
    p.add_argument("input", help="a .csv or .jsonl file in the session's [data] format (labels not needed)")
    p.add_argument("--out", metavar="FILE", help="write here (atomically) instead of stdout; never a file in "
                   "a run directory or the workspace's runs/, sessions/ or .tuneterm/")
    p.add_argument("--probs", action="store_true", help="every class's probability")
    p.add_argument("--max-new-tokens", type=int, metavar="N",
                   help="causal LM, preference: tokens to generate per row (default: [evaluation] "
                   "max_new_tokens)")
    _add_checkpoint(p)
    finish(p, cmd_predict, json=False)

    p = sub.add_parser("compare", help="runs side by side: session differences, edits, metrics",
                       description="One table: the session keys whose values differ, the edit logs side by "
                       "side, best and final metrics, steps and wall time.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="two or more run directories or run ids")
    finish(p, cmd_compare)

    p = sub.add_parser("report", help="what ran recently: state, steps, best metric, edits, failures",
                       description="Summarise the runs that started or ended within --since (the morning "
                       "after an overnight queue): state, steps, best metric, edits, wall time, and each "
                       "failure with its reason.")
    p.add_argument("--since", default="12h", help="a duration: 90m, 12h, 2d (default: 12h)")
    finish(p, cmd_report)


def _run(ws: Path, ref: str) -> Path:
    from tuneterm.workspace import find_run

    return find_run(ws, ref)


def _say_skipped(skipped: list) -> None:
    """The damaged newer checkpoints `last` or `best` passed over, as a resume says it."""
    for name, why in skipped:
        sys.stderr.write(f"tuneterm: warning: checkpoint {name} skipped: {why}\n")


def cmd_export(args: argparse.Namespace) -> int:
    from tuneterm.engine.export import export_run

    ws = workspace_of(args)
    info = export_run(_run(ws, args.run), ws, Path(args.out), which=args.checkpoint, merge=args.merge,
                      force=args.force)
    _say_skipped(info["skipped"])
    if args.json:
        print_json(info)
    else:
        sys.stderr.write(f"exported {info['run']} at {info['checkpoint']} ({len(info['files'])} files)\n")
        print(info["out"])
    return ExitCode.OK


def cmd_eval(args: argparse.Namespace) -> int:
    from tuneterm.engine.loaded import load_run
    from tuneterm.engine.predict import fmt_metric
    from tuneterm.engine.tasks import get_task
    from tuneterm.session.tasks import task_spec

    ws = workspace_of(args)
    run = load_run(_run(ws, args.run), ws, args.checkpoint, args.device)
    _say_skipped(run.skipped)
    res = get_task(run.session).evaluate_file(run, Path(args.data))
    if args.json:
        print_json(res)
        return ExitCode.OK
    print(f"{res['run']} at {res['checkpoint']} on {res['data']} ({res['examples']} examples)")
    print("  ".join(f"{k} {fmt_metric(res[k])}" for k in task_spec(run.task).eval_keys))
    if "per_class" not in res:  # classification also has a table per class and the confusion matrix
        return ExitCode.OK
    print_table([{"label": k, "precision": f"{v['precision']:.3f}", "recall": f"{v['recall']:.3f}",
                  "f1": f"{v['f1']:.3f}", "support": v["support"]} for k, v in res["per_class"].items()],
                ["label", "precision", "recall", "f1", "support"])
    labels, matrix = res["confusion"]["labels"], res["confusion"]["matrix"]
    print("confusion (rows: true label, columns: predicted)")
    print_table([{"true": lab, **{p: str(n) for p, n in zip(labels, row)}} for lab, row in zip(labels, matrix)],
                ["true", *labels])
    return ExitCode.OK


def _check_predict_out(out: Path, ws: Path, run_dir: Path) -> None:
    """Before any work: --out is not a file of a run (its metrics, session, a checkpoint...)
    or of the workspace's own folders (export's rule, workspace.clash)."""
    from tuneterm.workspace import clash

    overlap = clash(out, ws, (("the run", run_dir),))
    if overlap:
        raise UserError(f"--out {out}: {overlap}; predict never writes over or into a run or the workspace's "
                        "runs/, sessions/ or .tuneterm/: choose another file")


def cmd_predict(args: argparse.Namespace) -> int:
    from tuneterm.engine.loaded import load_run
    from tuneterm.engine.predict import check_out, predict_file
    from tuneterm.session.tasks import task_spec

    ws = workspace_of(args)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens: {args.max_new_tokens} must be at least 1")
    run_dir = _run(ws, args.run)
    if args.out:
        _check_predict_out(Path(args.out), ws, run_dir)
        check_out(Path(args.out))
    run = load_run(run_dir, ws, args.checkpoint, args.device)
    _say_skipped(run.skipped)
    generates = task_spec(run.task).model == "causal-lm"  # causal LM, preference: a completion per row
    if args.max_new_tokens is not None and not generates:
        raise UserError("--max-new-tokens applies to causal-LM and preference runs only")
    if args.probs and generates:
        raise UserError("--probs applies to classification runs only")
    n = predict_file(run, Path(args.input), Path(args.out) if args.out else None, probs=args.probs,
                     max_new_tokens=args.max_new_tokens)
    if args.out:
        sys.stderr.write(f"{n} rows -> {args.out}\n")
    return ExitCode.OK


def cmd_compare(args: argparse.Namespace) -> int:
    from tuneterm.compare import compare_runs, format_table

    ws = workspace_of(args)
    if len(args.runs) < 2:
        raise UserError("compare: give at least two runs")
    cmp = compare_runs([_run(ws, r) for r in args.runs])
    if args.json:
        print_json(cmp)
    else:
        sys.stdout.write(format_table(cmp))
    return ExitCode.OK


def cmd_report(args: argparse.Namespace) -> int:
    from tuneterm.compare import REPORT_COLUMNS, parse_since, report, report_cells, report_footer
    from tuneterm.workspace import runs_dir

    ws = workspace_of(args)
    rows = report(runs_dir(ws), parse_since(args.since))
    if args.json:
        print_json({"since": args.since, "runs": rows})
        return ExitCode.OK
    if not rows:
        print(f"no runs in the last {args.since}")
        return ExitCode.OK
    print_table([report_cells(r) for r in rows], REPORT_COLUMNS)
    print("\n".join(report_footer(rows, args.since)))
    return ExitCode.OK
