"""`tuneterm predict` against `transformers.pipeline("text-classification")` over the exported
folder, and `tuneterm export` time.

    python benchmarks/predict.py                       # MiniLM, 2,000 BBC News articles
    python benchmarks/predict.py --rows 500 --repeats 1 --threads 1
    python benchmarks/predict.py --smollm2              # also the export time of SmolLM2-135M
    python benchmarks/predict.py --texts tweets         # short, uneven rows (the classifier is the same)

Set-up (not timed): a MiniLM classifier run on builtin:bbc-news trained for two steps
(the weights do not matter for speed), exported with `tuneterm export`.

Timed, each side over the same 2,000 article texts, the same batch size, the same
max_length (truncation at the session's max_length), the same torch threads, fp32 on the
CPU, after one warm-up batch each, sides alternating per repeat (the best of the repeats):

  tuneterm   ``predict_rows`` on the run loaded once (``load_run``): tokenise all rows,
             batch them length-sorted (little padding), softmax, label + probability
  pipeline   ``pipeline("text-classification", model=OUT, batch_size=B, truncation=True)``,
             rows in input order (each batch padded to its longest), top label + score

Export: the wall time of ``export_run`` (load the checkpoint, write the folder, rename),
with torch and transformers already imported. ``--smollm2`` also trains one step of a
SmolLM2-135M causal-LM run on 16 headline records and times its export.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

if __name__ != "__main__":  # pragma: no cover
    raise ImportError("benchmarks/predict.py is a script")

# Run as a script, this folder is sys.path[0]: its kernels.py would shadow the name that
# transformers probes for.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if (str(Path(p).resolve()) if p else os.getcwd()) != _HERE]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SESSION = """\
[session]
name = "{name}"
seed = 0

[model]
source = "{model}"
task = "{task}"

[data]
source = "builtin:bbc-news"
max_length = {max_length}
max_samples = 64
max_eval_samples = 16

[hyperparameters]
learning_rate = 5e-5
batch_size = 8
max_steps = 2
epochs = 0

[evaluation]
interval_steps = 2
{evaluation}
[checkpoint]
interval_steps = 2

[runtime]
kernels = "torch"
device = "cpu"
threads = {threads}
"""


def train(ws: Path, name: str, model: str, task: str, max_length: int, threads: int) -> Path:
    from tuneterm.engine.progress import Progress  # noqa: F401 - the engine's imports, warm
    from tuneterm.engine.runs import create_run, setup_logging, train_run
    from tuneterm.session.io import load_session

    path = ws / "sessions" / f"{name}.toml"
    path.write_text(SESSION.format(name=name, model=model, task=task, max_length=max_length, threads=threads,
                                   evaluation="samples = 0\n" if task == "causal-lm" else ""))
    run_dir = create_run(ws, load_session(path, ws))
    setup_logging(run_dir, to_stderr=False)
    train_run(run_dir, ws, sinks=[])
    return run_dir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--smollm2", action="store_true", help="also time the export of a SmolLM2-135M run")
    ap.add_argument("--texts", choices=("bbc", "tweets"), default="bbc",
                    help="what to predict on: BBC News articles (long: all truncated) or tweets (short, uneven)")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import pipeline

    from tuneterm.engine.data import _bbc_news, _tweets
    from tuneterm.engine.export import export_run
    from tuneterm.engine.loaded import load_run
    from tuneterm.engine.predict import predict_rows

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    tmp = Path(tempfile.mkdtemp(prefix="tt-predict-bench-"))
    ws = tmp / "ws"
    (ws / "sessions").mkdir(parents=True)
    run_dir = train(ws, "bench-minilm", "builtin:minilm-l6", "sequence-classification", args.max_length, args.threads)
    texts = (_tweets() if args.texts == "tweets" else _bbc_news()).texts
    texts = (texts * (args.rows // len(texts) + 1))[: args.rows]
    rows = [{"text": t} for t in texts]

    t0 = time.perf_counter()
    export_run(run_dir, ws, tmp / "minilm-export")
    export_s = {"MiniLM-L6 (22.7M params)": time.perf_counter() - t0}
    folder = str(tmp / "minilm-export")

    run = load_run(run_dir, ws, "last")
    pipe = pipeline("text-classification", model=folder, device="cpu")
    predict_rows(run, rows[: args.batch_size], batch_size=args.batch_size)  # warm-up
    pipe(texts[: args.batch_size], batch_size=args.batch_size, truncation=True)
    best = {"tuneterm": float("inf"), "pipeline": float("inf")}
    agree = None
    for r in range(args.repeats):
        for side in (("tuneterm", "pipeline") if r % 2 == 0 else ("pipeline", "tuneterm")):
            t0 = time.perf_counter()
            if side == "tuneterm":
                ours = predict_rows(run, rows, batch_size=args.batch_size)
            else:
                theirs = pipe(texts, batch_size=args.batch_size, truncation=True)
            best[side] = min(best[side], time.perf_counter() - t0)
        agree = sum(a["prediction"] == b["label"] for a, b in zip(ours, theirs)) / len(rows)

    if args.smollm2:
        lm_dir = train(ws, "bench-smollm2", "builtin:smollm2-135m", "causal-lm", 64, args.threads)
        t0 = time.perf_counter()
        export_run(lm_dir, ws, tmp / "smollm2-export")
        export_s["SmolLM2-135M (134.5M params)"] = time.perf_counter() - t0

    load = os.getloadavg()[0]
    what = "BBC News articles" if args.texts == "bbc" else "tweets"
    print(f"# predict: {args.rows} {what}, MiniLM-L6, batch {args.batch_size}, max_length "
          f"{args.max_length}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}, load average {load:.1f}")
    print("| side | seconds | rows/s |")
    print("| --- | --- | --- |")
    for side in ("tuneterm", "pipeline"):
        print(f"| {side} | {best[side]:.2f} | {args.rows / best[side]:.0f} |")
    print(f"\nratio tuneterm / pipeline (rows/s): {best['pipeline'] / best['tuneterm']:.2f}x; "
          f"the same top label on {100 * agree:.1f}% of rows")
    print("\n| export | seconds |")
    print("| --- | --- |")
    for k, v in export_s.items():
        print(f"| {k} | {v:.2f} |")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


sys.exit(main())
