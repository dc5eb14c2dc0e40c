"""DPO on the CPU: tuneterm's preference task against TRL's DPOTrainer, the same pairs in the
same order at identical settings — SmolLM2-135M-Instruct preferring each BBC News article's
real headline to another article's.

    python benchmarks/dpo_cpu.py                            # short default
    python benchmarks/dpo_cpu.py --steps 4 --repeats 1      # a quick look on a busy machine
    python benchmarks/dpo_cpu.py --steps 20 --repeats 3 --threads 2

Sides: ``tuneterm`` (reference = "auto": a frozen copy, its log-probs computed each step),
``tuneterm-pre`` (reference = "precompute"), ``trl`` (ref_model = a frozen copy of the
model, computed each step), ``trl-pre`` (``precompute_ref_log_probs=True``). Each side runs
in its own subprocess (peak RSS never mixes); the sides rotate each repeat, the table shows
medians. Identical on every side:
  * pairs: tuneterm's builtin:bbc-news pairs (seeded split, the first --train-pairs of the
    training split), conversational (SmolLM2's chat template); TRL gets the same records as
    {prompt, chosen, rejected} message lists and tokenises them itself — the script checks
    that TRL's prompt/chosen/rejected token ids equal tuneterm's, pair for pair; pairs
    whose prompt fills --max-length are left out on both sides (TRL drops them too);
  * model: SmolLM2-135M in fp32 from the same cache folder, the embeddings (tied head) and
    the lower --freeze-below blocks frozen, no dropout (TRL's disable_dropout);
  * loss: sigmoid DPO, beta --beta, no label smoothing; reference: the untrained model;
  * optimisation: AdamW (0.9/0.999, eps 1e-8, weight decay 0), constant learning rate, no
    warmup, clipping at 1.0, --batch-size pairs a step, no accumulation, fp32 without
    autocast, no gradient checkpointing (TRL's DPOConfig defaults it on: off here);
  * the batch order: tuneterm's epoch order, handed to TRL as pre-ordered rows read by a
    SequentialSampler, so step k sees the same pairs on every side.
Compared per step: the loss and rewards/accuracies (TRL: recorded in compute_loss;
tuneterm: metrics.jsonl), relative difference against the matching tuneterm side.
Timed: steps 2..N, from each side's own step-end clock (reference precomputation, set-up
and model loading are outside the window): wall-clock pairs/s, and the process's CPU seconds
per pair (steadier than the wall clock on a machine other jobs share).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _sides  # noqa: E402  (from this folder, before it leaves the path)

# benchmarks/ holds a script named kernels.py, which transformers would import as the
# `kernels` package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

SIDES = ("tuneterm", "trl", "tuneterm-pre", "trl-pre")


def _session(args, reference: str):
    from tuneterm.session.io import loads_session

    frozen = ", ".join(['"embeddings"'] + [f'"layer.{i}"' for i in range(args.freeze_below)])
    return loads_session(f"""
[session]
name = "dpo-bench"
seed = {args.seed}
[model]
source = "builtin:smollm2-135m"
task = "preference"
[data]
source = "builtin:bbc-news"
max_length = {args.max_length}
max_samples = {args.train_pairs}
max_eval_samples = 4
[hyperparameters]
learning_rate = {args.lr}
batch_size = {args.batch_size}
max_steps = {args.steps}
dropout = 0.0
weight_decay = 0.0
schedule = "constant"
grad_clip = 1.0
[preference]
loss = "dpo"
beta = {args.beta}
reference = "{reference}"
[evaluation]
interval_steps = {args.steps * 10}
samples = 0
[checkpoint]
interval_steps = 0
keep_best = false
[freeze]
layers = [{frozen}]
[runtime]
device = "cpu"
kernels = "torch"
threads = {args.threads}
""")


def _pairs(args):
    """(tokenizer, the kept training records, their encoded pairs), as tuneterm reads them."""
    from tuneterm.engine import pref_data as PD
    from tuneterm.engine.models import load_tokenizer
    from tuneterm.engine.tasks.causal_lm import split_records
    from tuneterm.engine.tasks.preference import PreferenceTask, _builtin

    tok = load_tokenizer("builtin:smollm2-135m")
    data = PreferenceTask().load_data(_session(args, "auto"), None, tok)
    spec = _session(args, "auto").data
    train_r, _, _ = split_records(spec, None, args.seed, read=PD.records_from, builtin=_builtin)
    kept = [r for r in train_r[: args.train_pairs] if len(PD.tokenize(r, tok)[0]) < args.max_length]
    assert len(kept) == len(data.train), (len(kept), len(data.train))
    return tok, kept, data.train.pairs


def _order(args, n: int) -> list:
    """The pair indices of steps 1..N in tuneterm's order (epochs roll over as in tuneterm)."""
    from tuneterm.engine import data as D

    out, epoch = [], 0
    while len(out) < args.steps * args.batch_size:
        out += [int(i) for i in D.epoch_order(args.seed, epoch, n)]
        epoch += 1
    return out[: args.steps * args.batch_size]


def _rate(args, stamps, cpu) -> dict:
    """Wall-clock pairs/s and CPU seconds per pair (this process's threads: less at the
    mercy of other jobs on a shared machine) over steps 2..N."""
    window, pairs = stamps[-1] - stamps[0], (len(stamps) - 1) * args.batch_size
    return {"window_s": window, "s_per_step": window / (len(stamps) - 1), "pairs_per_s": pairs / window,
            "cpu_s_per_pair": (cpu[-1] - cpu[0]) / pairs}


def step_clock():
    """Wall and CPU time at each step's end: a metric sink for tuneterm's trainer (the other
    sink methods are the protocol's no-ops), ``tick()`` from TRL's step-end callback."""
    from tuneterm.engine.control import Sink

    class StepClock(Sink):
        def __init__(self) -> None:
            self.wall, self.cpu = [], []

        def tick(self) -> None:
            self.wall.append(time.perf_counter())
            self.cpu.append(time.process_time())

        def metric(self, row: dict) -> None:
            if row.get("kind") == "train":
                self.tick()

    return StepClock()


def side_tuneterm(args, reference: str) -> dict:
    from tuneterm.engine.runs import create_run
    from tuneterm.engine.trainer import Trainer

    ws = Path(tempfile.mkdtemp(prefix="tt-dpo-bench-"))
    (ws / "runs").mkdir()
    s = _session(args, reference)
    clock = step_clock()
    t = Trainer(s, create_run(ws, s), ws, sinks=[clock])
    t.setup()
    t.train()
    rows = [json.loads(x) for x in (t.run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train = [r for r in rows if r["kind"] == "train"]
    t.cleanup()
    return {**_rate(args, clock.wall, clock.cpu), "losses": [r["loss"] for r in train],
            "accuracies": [r["reward_accuracy"] for r in train], "margins": [r["reward_margin"] for r in train]}


def side_trl(args, precompute: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from tuneterm.engine.smollm2 import smollm2_path

    tok, kept, ours = _pairs(args)
    order = _order(args, len(kept))
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_path()), dtype=torch.float32)
    model.model.embed_tokens.weight.requires_grad_(False)  # tied: the head too
    for i, layer in enumerate(model.model.layers):
        layer.requires_grad_(i >= args.freeze_below)
    ref = None if precompute else copy.deepcopy(model).eval().requires_grad_(False)
    ds = Dataset.from_list([{"prompt": kept[i].prompt, "chosen": kept[i].chosen, "rejected": kept[i].rejected}
                            for i in order])
    cfg = DPOConfig(output_dir=tempfile.mkdtemp(prefix="trl-dpo-bench-"), per_device_train_batch_size=args.batch_size,
                    max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
                    weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
                    optim="adamw_torch", logging_steps=1, save_strategy="no", report_to=[], seed=args.seed,
                    use_cpu=True, dataloader_num_workers=0, disable_tqdm=True, gradient_checkpointing=False,
                    bf16=False, beta=args.beta, loss_type=["sigmoid"], label_smoothing=0.0,
                    max_length=args.max_length, truncation_mode="keep_start", disable_dropout=True,
                    precompute_ref_log_probs=precompute)
    clock, losses, accs, margins = step_clock(), [], [], []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            clock.tick()

    class InOrder(DPOTrainer):
        def _get_train_sampler(self, *a, **k):
            return torch.utils.data.SequentialSampler(self.train_dataset)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            if model.training:
                losses.append(float(out))
                accs.append(self._metrics["train"]["rewards/accuracies"][-1])
                margins.append(self._metrics["train"]["rewards/margins"][-1])
            return out

    trainer = InOrder(model=model, ref_model=ref, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    room = [args.max_length - len(r["prompt_ids"]) for r in trainer.train_dataset]
    same = all(r["prompt_ids"] == ours[i].prompt_ids and r["chosen_ids"][:n] == ours[i].chosen_ids
               and r["rejected_ids"][:n] == ours[i].rejected_ids
               for r, i, n in zip(trainer.train_dataset, order, room))
    trainer.train()
    return {**_rate(args, clock.wall, clock.cpu), "losses": losses, "accuracies": accs, "margins": margins,
            "same_tokens": same}


def run_side(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    fn = {"tuneterm": lambda: side_tuneterm(args, "auto"), "tuneterm-pre": lambda: side_tuneterm(args, "precompute"),
          "trl": lambda: side_trl(args, False), "trl-pre": lambda: side_trl(args, True)}[args.side]
    res = fn()
    res.update(side=args.side, steps=args.steps)
    _sides.emit(res)


def _rel(a: list, b: list) -> float:
    return max((abs(x - y) / max(abs(x), abs(y), 1e-12) for x, y in zip(a, b)), default=float("nan"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=192)
    p.add_argument("--train-pairs", type=int, default=200)
    p.add_argument("--freeze-below", type=int, default=24)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--sides", default=",".join(SIDES))
    p.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        run_side(args)
        return 0
    results = _sides.run_sides(__file__, args.sides.split(","), args.repeats, _sides.options(args))
    print(f"SmolLM2-135M DPO (sigmoid, beta {args.beta}), {args.steps} steps x {args.batch_size} pairs, max_length "
          f"{args.max_length}, {args.threads} threads, {args.repeats} repeat(s), embeddings + lower "
          f"{args.freeze_below} blocks frozen")
    print(f"{'side':13} {'s/step':>8} {'pairs/s':>8} {'CPU s/pair':>10} {'peak RSS MB':>12} {'loss step 1':>12} "
          f"{'loss step N':>12} {'acc step N':>10}")
    for side, rs in results.items():
        if not rs:
            continue
        med = {k: statistics.median(r[k] for r in rs)
               for k in ("s_per_step", "pairs_per_s", "cpu_s_per_pair", "peak_rss_mb")}
        print(f"{side:13} {med['s_per_step']:8.2f} {med['pairs_per_s']:8.3f} {med['cpu_s_per_pair']:10.2f} "
              f"{med['peak_rss_mb']:12.0f} "
              f"{rs[0]['losses'][0]:12.6f} {rs[0]['losses'][-1]:12.6f} {rs[0]['accuracies'][-1]:10.3f}")
    for ours, peer in (("tuneterm", "trl"), ("tuneterm-pre", "trl-pre")):
        a, b = results.get(ours), results.get(peer)
        if not (a and b):
            continue
        speed = [x["pairs_per_s"] / y["pairs_per_s"] for x, y in zip(a, b)]
        work = [y["cpu_s_per_pair"] / x["cpu_s_per_pair"] for x, y in zip(a, b)]
        print(f"{ours} / {peer}: pairs/s {', '.join(f'{r:.2f}x' for r in speed)} (median "
              f"{statistics.median(speed):.2f}x), by CPU time per pair {', '.join(f'{r:.2f}x' for r in work)} "
              f"(median {statistics.median(work):.2f}x); peak RSS {a[0]['peak_rss_mb'] / b[0]['peak_rss_mb']:.2f}x; "
              f"per-step loss max rel. diff {_rel(a[0]['losses'], b[0]['losses']):.2e}, rewards/accuracies "
              f"{_rel(a[0]['accuracies'], b[0]['accuracies']):.2e}, margins (absolute) "
              f"{max(abs(x - y) for x, y in zip(a[0]['margins'], b[0]['margins'])):.2e}; "
              f"TRL's token ids equal tuneterm's: {b[0]['same_tokens']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
