"""tuneterm's engine against the Hugging Face ``Trainer`` on the CPU: MiniLM on BBC News.

    python benchmarks/train_cpu.py                      # short default (a few minutes on 2 cores)
    python benchmarks/train_cpu.py --paired --threads 1 --repeats 3   # on a shared, noisy machine
    python benchmarks/train_cpu.py --steps 200 --train-examples 1600 --repeats 3
    python benchmarks/train_cpu.py --padding dynamic    # "identical" = both pad to the batch's longest
    python benchmarks/train_cpu.py --report results.json   # the table of a --json file

Sides (each run in its own subprocess, so that peak memory — the RSS high-water mark —
never mixes; the sides are interleaved, rotated each repeat, and the table shows medians
over repeats, because the machine is shared and timings are noisy):

  hf                  transformers.Trainer, its own training loop, optimizer (``--hf-optim``,
                      default the Trainer's own default) and ``nn.Dropout``
  tuneterm            tuneterm's engine (``create_run`` + ``train_run``) with the *same*
                      settings: same examples, token ids, padding, batches in the same order
  tuneterm-defaults   tuneterm as shipped: its own dynamic padding (pad to the longest of
                      each batch); every other setting as above

What is identical between ``hf`` and ``tuneterm``:
  * data: tuneterm's split of BBC News (seeded), the first --train-examples / --eval-examples,
    tokenised once by the same call (``truncation=True, max_length``) — both sides get the
    same token ids;
  * padding: ``--padding max_length`` (default) pads every batch to max_length on both
    sides — the Trainer through ``DataCollatorWithPadding(padding="max_length")``, tuneterm
    through a benchmark-only wrapper around ``tuneterm.engine.data.collate`` (the engine has
    no such option: it always pads dynamically). ``--padding dynamic``: both pad to the
    batch's longest;
  * batches: the Trainer gets a sampler that yields tuneterm's epoch order
    (``data.epoch_order(seed, epoch, n)``), so both see the same batches in the same order
    (checked: every batch the Trainer collates is compared with the plan);
  * model: all-MiniLM-L6-v2 with a 5-way head, initialised after ``torch.manual_seed(seed)``
    on both sides (the same head weights), float32, dropout ``p`` on every site (hidden,
    attention probabilities, classifier);
  * optimisation: AdamW (betas 0.9/0.999, eps 1e-8), the same peak lr, linear schedule with
    the same integer warmup (``ceil(total * warmup_ratio)``), weight decay on the same
    tensors (checked: the Trainer's ``get_decay_parameter_names`` — not bias, not LayerNorm —
    equals tuneterm's ``dim >= 2`` set for this model), global-norm clipping at
    --grad-clip, batch size, no gradient accumulation, the same number of steps;
  * threads: ``torch.set_num_threads(--threads)`` on both; both log the loss every step.

What cannot be made identical, or differs in how it is computed:
  * dropout masks: the Trainer draws them from torch's global RNG; tuneterm from its
    counter-based Philox generator keyed by (seed, step, site) — same ``p``, different masks,
    so losses and accuracies differ by run-to-run noise, not by a bias;
  * the optimizer call: both use ``torch.optim.AdamW(fused=True)`` on two parameter groups
    (the Trainer's default ``adamw_torch_fused``; tuneterm's torch path since engine commit
    242b920 — before it, ``foreach=False``). tuneterm passes the learning rate and weight
    decay into the groups each step and clips by scaling the gradients itself; the Trainer
    uses a LambdaLR and ``clip_grad_norm_`` — the same arithmetic up to float rounding;
  * attention: in training with dropout tuneterm runs its own eager attention (to apply its
    dropout to the probabilities); the Trainer's BERT uses SDPA with ``dropout_p``;
  * evaluation batches: tuneterm sorts validation examples by length, the Trainer keeps
    their order (same padding rule; accuracy does not depend on it beyond float noise);
  * the engine's run-directory bookkeeping (metrics.jsonl per step, final checkpoint) is
    part of tuneterm's cost; the final checkpoint and evaluation fall outside the timed window.

With ``--paired`` each tuneterm side runs at the same time as its own fresh Trainer run
(half the cores each), so the two see the same outside load; the ratio of each pair is
then a far steadier figure than the ratio of medians of runs taken minutes apart.

Timing: samples/s over the training loop only, from the end of step 1 to the end of the
last step (step 1 carries one-time costs on both sides: lazy optimizer state, allocator
warm-up). Model loading, tokenisation, evaluation and saving are not timed. Validation
accuracy is measured once after training. Peak memory is ``ru_maxrss`` of the side's
process (it includes the model, the corpus and the libraries each side imports).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this folder is sys.path[0]: its kernels.py would then shadow the
# optional `kernels` package that transformers probes for. Import from site-packages only.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if (str(Path(p).resolve()) if p else os.getcwd()) != _HERE]

SIDES = ("hf", "tuneterm", "tuneterm-defaults")
LABELS = {
    "hf": "HF Trainer",
    "tuneterm": "tuneterm, identical settings",
    "tuneterm-defaults": "tuneterm, its defaults (dynamic padding)",
}


# ----------------------------------------------------------------------------- shared
def planned_batches(n: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """The batches both sides train on: tuneterm's epoch orders cut by a cursor, never
    across an epoch end (what the engine does, and what a DataLoader without drop_last
    does over the same order)."""
    from tuneterm.engine.data import epoch_order

    out, epoch = [], 0
    while len(out) < steps:
        order = epoch_order(seed, epoch, n).tolist()
        for start in range(0, n, batch_size):
            out.append(order[start:start + batch_size])
            if len(out) == steps:
                break
        epoch += 1
    return out


def total_steps(cfg: dict) -> int:
    if cfg["steps"] > 0:
        return cfg["steps"]
    return math.ceil(cfg["train_examples"] / cfg["batch_size"]) * cfg["epochs"]


def warmup_steps(cfg: dict) -> int:
    return int(math.ceil(total_steps(cfg) * cfg["warmup_ratio"]))


def load_data(cfg: dict):
    """tuneterm's seeded split, capped, tokenised once (the same ids for both sides)."""
    from tuneterm.engine import data as D
    from tuneterm.engine.models import load_tokenizer
    from tuneterm.session.schema import DataSpec

    spec = DataSpec(source="builtin:bbc-news", validation_split=0.2, max_length=cfg["max_length"],
                    max_samples=cfg["train_examples"], max_eval_samples=cfg["eval_examples"])
    corpus = D.load_corpus(spec, None, cfg["seed"])
    tok = load_tokenizer("builtin:minilm-l6")
    train = D.encode(corpus.train, tok, corpus.label_names, cfg["max_length"])
    val = D.encode(corpus.val, tok, corpus.label_names, cfg["max_length"])
    return tok, corpus.label_names, train, val


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def throughput(step_ends: list[float], batches: list[list[int]]) -> dict:
    """samples/s from the end of step 1 to the end of the last step; and the median step."""
    n = len(step_ends)
    if n < 2:
        return {"samples_per_s": None, "median_step_s": None}
    samples = sum(len(b) for b in batches[1:n])
    gaps = [b - a for a, b in zip(step_ends, step_ends[1:])]
    return {"samples_per_s": samples / (step_ends[-1] - step_ends[0]), "median_step_s": statistics.median(gaps),
            "timed_steps": n - 1, "timed_samples": samples}


# ----------------------------------------------------------------------------- hf side
def run_hf(cfg: dict) -> dict:
    import numpy as np
    import torch
    from torch.utils.data import Sampler
    from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer,
                              TrainerCallback, TrainingArguments)
    from transformers import logging as hf_logging

    from tuneterm.engine.data import epoch_order
    from tuneterm.engine.models import minilm_path

    torch.set_num_threads(cfg["threads"])
    hf_logging.set_verbosity_error()
    tok, labels, train, val = load_data(cfg)
    p = cfg["dropout"]
    # The same head initialisation as tuneterm's build_model: seed, then load.
    torch.manual_seed(cfg["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(
        str(minilm_path()), num_labels=len(labels), hidden_dropout_prob=p, attention_probs_dropout_prob=p,
        classifier_dropout=p)

    train_ds = [{"input_ids": train.ids[i], "labels": int(train.labels[i]), "idx": i} for i in range(len(train))]
    val_ds = [{"input_ids": val.ids[i], "labels": int(val.labels[i]), "idx": i} for i in range(len(val))]
    pad_kw = ({"padding": "max_length", "max_length": cfg["max_length"]} if cfg["padding"] == "max_length"
              else {"padding": "longest"})
    base = DataCollatorWithPadding(tok, **pad_kw)
    seen: list[list[int]] = []

    def collate(features):
        seen.append([f.pop("idx") for f in features])
        return base(features)

    class EpochOrderSampler(Sampler):
        """tuneterm's order: epoch e is ``epoch_order(seed, e, n)``."""

        def __init__(self, n: int) -> None:
            self.n, self.epoch, self.iters = n, None, 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __len__(self) -> int:
            return self.n

        def __iter__(self):
            e = self.epoch if self.epoch is not None else self.iters
            self.iters += 1
            return iter(epoch_order(cfg["seed"], e, self.n).tolist())

    class SameOrderTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return EpochOrderSampler(len(train_ds))

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())

    clock = Clock()
    out_dir = tempfile.mkdtemp(prefix="tt-bench-hf-")
    args = TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=cfg["batch_size"],
        per_device_eval_batch_size=2 * cfg["batch_size"], learning_rate=cfg["lr"],
        weight_decay=cfg["weight_decay"], adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        max_grad_norm=cfg["grad_clip"], lr_scheduler_type="linear", warmup_steps=warmup_steps(cfg),
        num_train_epochs=cfg["epochs"], max_steps=cfg["steps"] if cfg["steps"] > 0 else -1,
        optim=cfg["hf_optim"], seed=cfg["seed"], use_cpu=True, report_to="none", disable_tqdm=True,
        save_strategy="no", eval_strategy="no", logging_strategy="steps", logging_steps=1,
        remove_unused_columns=False, dataloader_num_workers=0, dataloader_pin_memory=False,
        gradient_accumulation_steps=1)
    trainer = SameOrderTrainer(model=model, args=args, train_dataset=train_ds, data_collator=collate,
                               callbacks=[clock])
    decay = set(trainer.get_decay_parameter_names(model))
    decay_tt = {n for n, q in model.named_parameters() if q.dim() >= 2}
    result = trainer.train()
    steps = result.global_step
    plan = planned_batches(len(train), cfg["batch_size"], steps, cfg["seed"])
    same_batches = seen[:steps] == plan
    seen.clear()
    pred = trainer.predict(val_ds)
    acc = float(np.mean(np.argmax(pred.predictions, axis=-1) == val.labels))
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {"side": "hf", "steps": steps, **throughput(clock.ends, plan), "val_accuracy": acc,
            "mean_train_loss": statistics.fmean(losses) if losses else None,
            "same_batches": same_batches, "decay_sets_equal": decay == decay_tt,
            "optimizer": cfg["hf_optim"], "padding": cfg["padding"], "peak_rss_mib": peak_rss_mib()}


# ----------------------------------------------------------------------------- tuneterm side
class _Clock:
    """A metrics sink (tuneterm's sink protocol): the time each optimizer step ends."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.losses: list[float] = []

    def metric(self, row: dict) -> None:
        if row.get("kind") == "train":
            self.ends.append(time.perf_counter())
            if row.get("loss") is not None:
                self.losses.append(row["loss"])

    def event(self, row: dict) -> None:
        pass

    def reply(self, msg: dict) -> None:
        pass

    def close(self) -> None:
        pass


def session_toml(cfg: dict) -> str:
    warm = warmup_steps(cfg)
    return f"""
[session]
name = "bench-train-cpu"
seed = {cfg["seed"]}

[model]
source = "builtin:minilm-l6"

[data]
source = "builtin:bbc-news"
validation_split = 0.2
max_length = {cfg["max_length"]}
max_samples = {cfg["train_examples"]}
max_eval_samples = {cfg["eval_examples"]}

[hyperparameters]
learning_rate = {cfg["lr"]!r}
batch_size = {cfg["batch_size"]}
gradient_accumulation = 1
epochs = {float(cfg["epochs"])!r}
max_steps = {cfg["steps"]}
dropout = {cfg["dropout"]!r}
weight_decay = {cfg["weight_decay"]!r}
schedule = "linear"
{"warmup_steps = %d" % warm if warm > 0 else "warmup_ratio = 0.0"}
grad_clip = {cfg["grad_clip"]!r}

[evaluation]
interval_steps = 1000000000   # only the final evaluation, after the timed loop
metrics = ["loss", "accuracy"]

[early_stopping]
enabled = false

[checkpoint]
interval_steps = 0            # only the final checkpoint, after the timed loop
keep_best = false

[runtime]
device = "cpu"
kernels = "auto"
threads = {cfg["threads"]}
"""


def run_tuneterm(cfg: dict, side: str) -> dict:
    from tuneterm.engine import data as D
    from tuneterm.engine.runs import create_run, train_run
    from tuneterm.rundir import RunDir, read_jsonl
    from tuneterm.session.io import load_session

    seen: list[list[int]] = []
    dynamic = D.collate

    def collate(enc, indices, pad_id, device="cpu"):
        seen.append([int(i) for i in indices])
        batch = dynamic(enc, indices, pad_id, device)
        if side == "tuneterm" and cfg["padding"] == "max_length":
            # Benchmark-only: the engine always pads to the batch's longest; pad on to
            # max_length so that both sides compute on the same tensors.
            extra = cfg["max_length"] - batch["input_ids"].shape[1]
            if extra > 0:
                import torch.nn.functional as F
                batch["input_ids"] = F.pad(batch["input_ids"], (0, extra), value=pad_id)
                batch["attention_mask"] = F.pad(batch["attention_mask"], (0, extra), value=0)
        return batch

    D.collate = collate  # the loop and evaluate() call it through the module
    ws = Path(tempfile.mkdtemp(prefix="tt-bench-ws-"))
    (ws / "sessions").mkdir()
    path = ws / "sessions" / "bench.toml"
    path.write_text(session_toml(cfg))
    session = load_session(path, ws)
    run_dir = create_run(ws, session)
    clock = _Clock()
    code, state = train_run(run_dir, ws, sinks=[clock])
    rows = read_jsonl(RunDir(run_dir).metrics)
    evals = [r for r in rows if r["kind"] == "eval"]
    steps = len(clock.ends)
    plan = planned_batches(cfg["train_examples"], cfg["batch_size"], steps, cfg["seed"])
    start = [e for e in read_jsonl(RunDir(run_dir).events) if e["kind"] == "start"][0]
    return {"side": side, "steps": steps, **throughput(clock.ends, plan),
            "val_accuracy": evals[-1]["val_accuracy"] if evals else None,
            "mean_train_loss": statistics.fmean(clock.losses) if clock.losses else None,
            "same_batches": seen[:steps] == plan, "state": state, "kernels": start.get("kernels"),
            "padding": cfg["padding"] if side == "tuneterm" else "dynamic", "peak_rss_mib": peak_rss_mib()}


# ----------------------------------------------------------------------------- driver
def worker(side: str, cfg: dict) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = run_hf(cfg) if side == "hf" else run_tuneterm(cfg, side)
    print("RESULT " + json.dumps(res), flush=True)


def start_side(side: str, cfg: dict) -> tuple:
    cmd = [sys.executable, __file__, "--worker", side, "--config", json.dumps(cfg)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return side, proc, time.perf_counter()


def finish_side(started: tuple, verbose: bool, tag: str = "") -> dict:
    side, proc, t0 = started
    out, err = proc.communicate()
    lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(err[-4000:])
        raise SystemExit(f"{side}: the worker failed (exit {proc.returncode})")
    res = json.loads(lines[-1][len("RESULT "):])
    res["wall_s"] = time.perf_counter() - t0
    if verbose:
        print(f"  {side:18s}{tag} {res['samples_per_s']:.2f} samples/s  acc {res['val_accuracy']:.4f}  "
              f"peak {res['peak_rss_mib']:.0f} MiB  ({res['wall_s']:.0f} s)", flush=True)
    return res


def run_side(side: str, cfg: dict, verbose: bool) -> dict:
    return finish_side(start_side(side, cfg), verbose)


def run_pair(side: str, cfg: dict, verbose: bool) -> tuple[dict, dict]:
    """``side`` and a fresh Trainer run at the same time: both see the same outside load."""
    a, b = start_side("hf", cfg), start_side(side, cfg)
    hf, tt = finish_side(a, verbose, " (pair)"), finish_side(b, verbose, " (pair)")
    tt["paired_ratio"] = tt["samples_per_s"] / hf["samples_per_s"]
    return hf, tt


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def table(results: dict, cfg: dict) -> str:
    hf = median(r["samples_per_s"] for r in results.get("hf", []))
    paired = any("paired_ratio" in r for rs in results.values() for r in rs)
    # Paired: only the per-pair ratio compares like with like (a ratio of medians would mix
    # pairs taken under different outside load).
    lines = ["| side | padding | samples/s (median) | "
             + ("vs Trainer in pairs (median; each pair) | " if paired else "vs Trainer | ")
             + "s/step (median) | val accuracy | peak RSS MiB | same batches |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for side in cfg["sides"]:
        rs = results[side]
        sps = median(r["samples_per_s"] for r in rs)
        ratio = f"{sps / hf:.2f}x" if hf and sps else "-"
        accs = ", ".join(f"{100 * r['val_accuracy']:.1f}" for r in rs)
        pr = ""
        if paired:
            ratios = [r["paired_ratio"] for r in rs if "paired_ratio" in r]
            pr = (f"{median(ratios):.2f}x ({', '.join(f'{x:.2f}' for x in ratios)}) | " if ratios else "1.00x | ")
        lines.append(f"| {LABELS[side]} | {rs[0]['padding']} | {sps:.2f} | {pr if paired else ratio + ' | '}"
                     f"{median(r['median_step_s'] for r in rs):.2f} | {accs} | "
                     f"{median(r['peak_rss_mib'] for r in rs):.0f} | {all(r['same_batches'] for r in rs)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-examples", type=int, default=256, help="training examples (default 256)")
    ap.add_argument("--eval-examples", type=int, default=200, help="validation examples (default 200)")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps (overrides --epochs when > 0)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--padding", choices=("max_length", "dynamic"), default="max_length",
                    help="padding of the identical-settings pair (default max_length)")
    ap.add_argument("--hf-optim", default="adamw_torch_fused",
                    help="the Trainer's optim (default: its own default, adamw_torch_fused)")
    ap.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated subset of {', '.join(SIDES)}")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats; the table shows medians")
    ap.add_argument("--paired", action="store_true",
                    help="run each tuneterm side at the same time as a fresh Trainer run (give each half the "
                         "threads: --threads 1 on 2 cores), so both see the same outside load; the table adds "
                         "the median of the per-pair ratios — the robust figure on a shared, noisy machine")
    ap.add_argument("--json", type=Path, help="write every result here")
    ap.add_argument("--report", type=Path, help="print the table of a --json file (e.g. of an interrupted run)")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.worker, json.loads(a.config))
        return 0
    if a.report:
        saved = json.loads(a.report.read_text())
        saved["config"]["sides"] = [s for s in saved["config"]["sides"] if saved["results"].get(s)]
        print(table(saved["results"], saved["config"]))
        return 0
    sides = [s.strip() for s in a.sides.split(",") if s.strip()]
    bad = [s for s in sides if s not in SIDES]
    if bad:
        ap.error(f"--sides: unknown {bad[0]!r}")
    cfg = {"train_examples": a.train_examples, "eval_examples": a.eval_examples, "max_length": a.max_length,
           "batch_size": a.batch_size, "epochs": a.epochs, "steps": a.steps, "lr": a.lr,
           "warmup_ratio": a.warmup_ratio, "weight_decay": a.weight_decay, "dropout": a.dropout,
           "grad_clip": a.grad_clip, "seed": a.seed, "threads": a.threads, "padding": a.padding,
           "hf_optim": a.hf_optim, "sides": sides}
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {a.threads} threads; "
          f"{total_steps(cfg)} steps of {a.batch_size}, max_length {a.max_length}, "
          f"warmup {warmup_steps(cfg)} steps", flush=True)
    if a.paired and "hf" not in sides:
        sides = ["hf", *sides]
        cfg["sides"] = sides
    results: dict[str, list] = {s: [] for s in sides}
    for r in range(a.repeats):
        order = sides[r % len(sides):] + sides[:r % len(sides)]  # rotate: no side always first
        print(f"repeat {r + 1}/{a.repeats}", flush=True)
        for side in order:
            if a.paired and side != "hf":
                hf, tt = run_pair(side, cfg, verbose=True)
                results.setdefault("hf", []).append(hf)
                results[side].append(tt)
            elif not a.paired:
                results[side].append(run_side(side, cfg, verbose=True))
            if a.json:  # after every side: a long run interrupted still leaves its results
                a.json.write_text(json.dumps({"config": cfg, "results": results}, indent=1))
    print()
    print(table(results, cfg))
    for side in sides:
        for res in results[side]:
            if not res["same_batches"]:
                print(f"WARNING: {side} did not train on the planned batches")
    if "hf" in results and not all(r["decay_sets_equal"] for r in results["hf"]):
        print("WARNING: the Trainer decays a different set of parameters than tuneterm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
