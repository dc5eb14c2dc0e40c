"""Causal-LM SFT on the CPU: tuneterm against TRL's SFTTrainer and the plain HF Trainer with
a completion-only collator — SmolLM2-135M-Instruct writing BBC News headlines.

    python benchmarks/train_lm_cpu.py                          # short default
    python benchmarks/train_lm_cpu.py --steps 3 --repeats 1    # a quick look on a busy machine
    python benchmarks/train_lm_cpu.py --steps 40 --repeats 3 --threads 2

Each side runs in its own subprocess (peak RSS never mixes); the sides alternate and
rotate each repeat ("paired": neighbours see similar outside load), and the table shows
medians. Identical on every side:
  * tokens and masks: tuneterm's headline conversations (builtin:bbc-news, seeded split),
    rendered with SmolLM2's chat template and tokenised once by tuneterm's encoder; the
    trained tokens are the headline and its <|im_end|> (TRL gets them as completion_mask,
    the HF Trainer as labels = -100 elsewhere);
  * model: SmolLM2-135M in fp32 from the same cache folder, embeddings and the lower
    --freeze-below blocks frozen (the tied head with them), no dropout;
  * optimisation: AdamW (0.9/0.999, eps 1e-8, weight decay 0), constant learning rate,
    no warmup, clipping at 1.0, --batch-size examples a step, no accumulation, no packing,
    dynamic padding, fp32 without autocast and no gradient checkpointing (TRL's SFTConfig
    turns bf16 autocast and checkpointing on by default: both off here);
    torch.set_num_threads(--threads);
  * the validation loss: the same function (mean cross-entropy over the validation set's
    trained tokens, tuneterm's CausalLMTask.evaluate) on each side's final model.
  * the batch order: tuneterm's epoch order (data.epoch_order), handed to the HF sides as
    pre-ordered rows read by a SequentialSampler, so step k sees the same examples on every
    side and the per-step losses can be compared.
Timed: steps 2..N (step 1 warms up), from the end of step 1 to the end of step N: each
side's own step-end clock (tuneterm: its metrics.jsonl rows; HF: a TrainerCallback), so no
side's setup, final evaluation or checkpoint is inside the window. tokens/s counts every
non-padding token of those steps' batches; trained tokens/s the loss-bearing ones.
The packing gain is computed on the training set (padding share).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _sides  # noqa: E402  (from this folder, before it leaves the path)

# benchmarks/ holds a script named kernels.py, which transformers would import as the
# `kernels` package: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

SIDES = ("tuneterm", "trl", "hf")


def _data(args):
    from tuneterm.engine import lm_data as LM
    from tuneterm.engine.models import load_tokenizer
    from tuneterm.engine.tasks.causal_lm import split_records
    from tuneterm.session.schema import DataSpec

    tok = load_tokenizer("builtin:smollm2-135m")
    LM.prepare_tokenizer(tok)
    train_r, val_r, _ = split_records(DataSpec(source="builtin:bbc-news"), None, args.seed)
    train, _ = LM.encode_all(train_r[: args.train_examples], tok, args.max_length, "completion", strict=False)
    val, _ = LM.encode_all(val_r[: args.eval_examples], tok, args.max_length, "completion", strict=False)
    return tok, train, val


def _freeze(model, below: int) -> None:
    model.model.embed_tokens.weight.requires_grad_(False)  # tied: the head too
    for i, layer in enumerate(model.model.layers):
        if i < below:
            layer.requires_grad_(False)


def _val_loss(model, tok, val) -> float:
    from tuneterm.engine import lm_data as LM
    from tuneterm.engine.tasks.base import TaskData
    from tuneterm.engine.tasks.causal_lm import CausalLMTask

    task = CausalLMTask()
    task.pad_id = tok.pad_token_id
    return task.evaluate(model, TaskData(None, LM.Examples(val)), "cpu", 8)["val_loss"]


def _ordered(args, train) -> list:
    """The examples of steps 1..N in tuneterm's order (epochs roll over as in tuneterm)."""
    from tuneterm.engine import data as D

    out, epoch = [], 0
    while len(out) < args.steps * args.batch_size:
        out += [train[i] for i in D.epoch_order(args.seed, epoch, len(train))]
        epoch += 1
    return out[: args.steps * args.batch_size]


def _hf_rows(examples) -> list:
    """input_ids, labels (unshifted: HF shifts) and completion_mask per example."""
    out = []
    for e in examples:
        labels = [-100] + e.labels[:-1]
        out.append({"input_ids": e.ids, "labels": labels, "completion_mask": [int(x != -100) for x in labels]})
    return out


def _rate(args, ordered, stamps) -> dict:
    """Throughput over steps 2..N from step-end times (stamps[k] = end of step k+1)."""
    later = ordered[args.batch_size:]
    window = stamps[-1] - stamps[0]
    return {"window_s": window, "s_per_step": window / (len(stamps) - 1),
            "tokens_per_s": sum(len(e.ids) for e in later) / window,
            "trained_tokens_per_s": sum(e.trained for e in later) / window}


def side_tuneterm(args, tok, train, val) -> dict:
    from tuneterm.engine.runs import create_run
    from tuneterm.engine.trainer import Trainer
    from tuneterm.rundir import read_jsonl
    from tuneterm.session.io import loads_session

    ws = Path(tempfile.mkdtemp(prefix="tt-lm-bench-"))
    (ws / "runs").mkdir()
    frozen = ", ".join(['"embeddings"'] + [f'"layer.{i}"' for i in range(args.freeze_below)])
    s = loads_session(f"""
[session]
name = "lm-bench"
seed = {args.seed}
[model]
source = "builtin:smollm2-135m"
task = "causal-lm"
[data]
source = "builtin:bbc-news"
max_length = {args.max_length}
max_samples = {args.train_examples}
max_eval_samples = {args.eval_examples}
[hyperparameters]
learning_rate = {args.lr}
batch_size = {args.batch_size}
max_steps = {args.steps}
dropout = 0.0
weight_decay = 0.0
schedule = "constant"
grad_clip = 1.0
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
    t = Trainer(s, create_run(ws, s), ws, sinks=[])
    t.setup()
    assert [len(e.ids) for e in t.data.train.examples] == [len(e.ids) for e in train]  # the same tokens
    t.train()
    rows = read_jsonl(t.paths.metrics)
    train_rows = [r for r in rows if r["kind"] == "train"]
    loss = _val_loss(t.model, tok, val)
    t.cleanup()
    return {**_rate(args, _ordered(args, train), [r["time"] for r in train_rows]), "val_loss": loss,
            "losses": [r["loss"] for r in train_rows]}


def _hf_common(args):
    import torch
    from transformers import AutoModelForCausalLM

    from tuneterm.engine.smollm2 import smollm2_path

    torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_path()), dtype=torch.float32)
    _freeze(model, args.freeze_below)
    kw = dict(output_dir=tempfile.mkdtemp(prefix="hf-lm-bench-"), per_device_train_batch_size=args.batch_size,
              max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
              weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
              optim="adamw_torch", logging_steps=1, save_strategy="no", report_to=[], seed=args.seed,
              use_cpu=True, dataloader_num_workers=0, disable_tqdm=True,
              gradient_checkpointing=False, bf16=False)  # SFTConfig defaults both to True: fp32, no recompute
    return model, kw


def _in_order(cls):
    """The trainer class reading its (pre-ordered) dataset front to back, with a step clock."""
    import torch
    from transformers import TrainerCallback

    stamps: list = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    class InOrder(cls):
        def _get_train_sampler(self, *a, **k):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    return InOrder, Clock(), stamps


def _hf_result(args, trainer, ordered, stamps, model, tok, val) -> dict:
    losses = [x["loss"] for x in trainer.state.log_history if "loss" in x]
    return {**_rate(args, ordered, stamps), "val_loss": _val_loss(model, tok, val), "losses": losses}


def side_trl(args, tok, train, val) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, kw = _hf_common(args)
    ordered = _ordered(args, train)
    ds = Dataset.from_list([{k: r[k] for k in ("input_ids", "completion_mask")} for r in _hf_rows(ordered)])
    cfg = SFTConfig(**kw, max_length=args.max_length, packing=False, completion_only_loss=True,
                    dataset_kwargs={"skip_prepare_dataset": False})
    cls, clock, stamps = _in_order(SFTTrainer)
    trainer = cls(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[clock])
    trainer.train()
    return _hf_result(args, trainer, ordered, stamps, model, tok, val)


def side_hf(args, tok, train, val) -> dict:
    import torch
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    model, kw = _hf_common(args)
    pad = tok.pad_token_id

    def collate(rows):  # completion-only: labels are -100 outside the trained tokens
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[j, :n], labels[j, :n], mask[j, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    ordered = _ordered(args, train)
    ds = Dataset.from_list([{k: r[k] for k in ("input_ids", "labels")} for r in _hf_rows(ordered)])
    cls, clock, stamps = _in_order(Trainer)
    trainer = cls(model=model, args=TrainingArguments(**kw, remove_unused_columns=False), train_dataset=ds,
                  data_collator=collate, callbacks=[clock])
    trainer.train()
    return _hf_result(args, trainer, ordered, stamps, model, tok, val)


def run_side(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    tok, train, val = _data(args)
    res = {"tuneterm": side_tuneterm, "trl": side_trl, "hf": side_hf}[args.side](args, tok, train, val)
    res.update(side=args.side, steps=args.steps)
    _sides.emit(res)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=160)
    p.add_argument("--train-examples", type=int, default=200)
    p.add_argument("--eval-examples", type=int, default=16)
    p.add_argument("--freeze-below", type=int, default=24)
    p.add_argument("--lr", type=float, default=1e-4)
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
    _, train, _ = _data(args)
    from tuneterm.engine import lm_data as LM

    lengths = [len(e.ids) for e in train]
    packs = LM.pack(lengths, args.max_length)
    print(f"SmolLM2-135M SFT, {args.steps} steps x {args.batch_size}, max_length {args.max_length}, "
          f"{args.threads} threads, {args.repeats} repeat(s), lower {args.freeze_below} blocks frozen")
    print(f"{'side':10} {'s/step':>8} {'tok/s':>8} {'trained tok/s':>14} {'peak RSS MB':>12} {'val loss':>9} "
          f"{'loss step 1':>11} {'loss step N':>11}")
    for side, rs in results.items():
        if not rs:
            continue
        med = {k: statistics.median(r[k] for r in rs)
               for k in ("s_per_step", "tokens_per_s", "trained_tokens_per_s", "peak_rss_mb", "val_loss")}
        print(f"{side:10} {med['s_per_step']:8.2f} {med['tokens_per_s']:8.1f} {med['trained_tokens_per_s']:14.1f} "
              f"{med['peak_rss_mb']:12.0f} {med['val_loss']:9.4f} {rs[0]['losses'][0]:11.4f} "
              f"{rs[0]['losses'][-1]:11.4f}")
    base = results.get("tuneterm") or []
    for peer in ("trl", "hf"):
        if base and results.get(peer):  # paired: repeat i of each side ran back to back
            ratios = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(base, results[peer])]
            print(f"tuneterm / {peer} tokens/s, per repeat: " + ", ".join(f"{r:.2f}x" for r in ratios)
                  + f" (median {statistics.median(ratios):.2f}x)")
    print(f"packing at max_length {args.max_length}: {len(lengths)} examples -> {len(packs)} rows, padding "
          f"{LM.padding_share(lengths, args.max_length):.1%} -> {LM.padding_share(lengths, args.max_length, packs):.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
