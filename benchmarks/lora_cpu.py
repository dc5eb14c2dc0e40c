"""LoRA on the CPU: tuneterm against PEFT + TRL's ``SFTTrainer``, SmolLM2-135M on the headlines.

    python benchmarks/lora_cpu.py                       # 12 steps each side, paired, 2 threads
    python benchmarks/lora_cpu.py --steps 30 --repeats 3 --threads 1

Both sides: SmolLM2-135M-Instruct (builtin:smollm2-135m), PEFT LoRA r 16, alpha 32, every
linear layer (``"all-linear"``), adapter dropout 0, the demo session's headline data
(sessions/bbc-headlines-smollm2.toml) without packing, completion-only loss, the same token
ids and masks (tuneterm's encoding, handed to TRL pre-tokenised: ``input_ids`` +
``completion_mask``), the same examples in the same order (TRL's sampler replaced by
tuneterm's epoch order), batch 4 padded to the batch's longest, AdamW (fused) at a
constant learning rate, no weight decay, no clipping, fp32 without autocast and no
gradient checkpointing (TRL's SFTConfig turns bf16 autocast and checkpointing on by
default: both off here), the same threads. Each side runs in
its own subprocess (peak RSS never mixes); sides alternate, the first rotating each repeat.

Printed per side (medians over repeats): trained-step throughput in tokens/s (all
non-padding tokens of the batches of steps 2..N over their wall time: step 1 warms up),
peak RSS, the size of one checkpoint (tuneterm: checkpoints/step-N; TRL: its checkpoint-N
folder: adapter, optimizer, scheduler, RNG state), trainable parameters, and what a full
fine-tuning checkpoint would weigh (fp32 weights + two AdamW moments).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
import _sides  # noqa: E402  (from this folder, before it leaves the path)

# benchmarks/ holds a kernels.py script: off the path, or transformers' `import kernels` finds it
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _session(ws: Path, steps: int, examples: int, max_length: int):
    from tuneterm.session.io import load_session

    s = load_session(ROOT / "sessions" / "bbc-headlines-smollm2.toml", ws)
    s.data.packing = False
    s.data.max_samples, s.data.max_length, s.data.max_eval_samples = examples, max_length, 8
    h = s.hyperparameters
    h.max_steps, h.batch_size, h.schedule, h.warmup_steps = steps, 4, "constant", 0
    h.weight_decay, h.grad_clip, h.dropout, h.learning_rate = 0.0, 0.0, 0.0, 1e-4
    s.freeze.layers = []
    s.lora.enabled, s.lora.r, s.lora.alpha, s.lora.dropout = True, 16, 32.0, 0.0
    s.evaluation.interval_steps, s.evaluation.samples = 0, 0
    s.checkpoint.interval_steps, s.checkpoint.keep_last, s.checkpoint.keep_best = steps, 1, False
    s.runtime.kernels, s.runtime.device = "torch", "cpu"
    return s


def _batches(task, data, seed: int, steps: int, bs: int) -> list:
    from tuneterm.engine import data as D

    order = list(D.epoch_order(seed, 0, len(data.train)))
    return [order[i * bs:(i + 1) * bs] for i in range(steps)]


def _tokens(data, idx) -> int:
    return sum(len(r[0].ids) for r in data.train.rows(idx))


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def side_tuneterm(ws: Path, args) -> dict:
    from tuneterm.engine.runs import create_run
    from tuneterm.engine.trainer import Trainer
    from tuneterm.rundir import checkpoint_steps, read_jsonl

    s = _session(ws, args.steps, args.examples, args.max_length)
    t = Trainer(s, create_run(ws, s), ws, sinks=[])
    t.setup()
    batches = _batches(t.task, t.data, s.session.seed, args.steps, 4)
    t.train()
    rows = read_jsonl(t.paths.metrics)
    times = [r["time"] for r in rows if r["kind"] == "train"]
    tokens = sum(_tokens(t.data, b) for b in batches[1:])
    ck = t.paths.checkpoint_dir(checkpoint_steps(t.paths.checkpoints)[-1])
    n_all = sum(p.numel() for p in t.model.parameters())
    return {"tokens_per_s": tokens / (times[-1] - times[0]), "checkpoint_mb": _dir_mb(ck),
            "trainable": t.trainable_params(), "full_ft_checkpoint_mb": n_all * 12 / 1e6,
            "losses": [r["loss"] for r in rows if r["kind"] == "train"]}


def side_trl(ws: Path, args) -> dict:
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tuneterm.engine import lm_data as LM
    from tuneterm.engine import lora
    from tuneterm.engine.models import load_tokenizer
    from tuneterm.engine.tasks import get_task

    s = _session(ws, args.steps, args.examples, args.max_length)
    tok = load_tokenizer(s.model.source, ws)
    task = get_task(s)
    data = task.load_data(s, ws, tok)
    batches = _batches(task, data, s.session.seed, args.steps, 4)
    flat = [i for b in batches for i in b]
    rows = []
    for i in flat:  # tuneterm's labels are next-token targets; TRL masks the input positions
        e = data.train.rows([i])[0][0]
        rows.append({"input_ids": list(e.ids),
                     "completion_mask": [0] + [int(x != LM.IGNORE) for x in e.labels[:-1]]})
    model = task.build_model(s, ws, tok, data)
    torch.manual_seed(s.session.seed)
    model = get_peft_model(model, lora.peft_config(s))
    stamps = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    class InOrder(SFTTrainer):
        def _get_train_sampler(self, *a, **k):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    out = ws / "trl"
    cfg = SFTConfig(output_dir=str(out), per_device_train_batch_size=4, max_steps=args.steps, learning_rate=1e-4,
                    lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=0.0,
                    optim="adamw_torch_fused", logging_steps=1, save_strategy="steps", save_steps=args.steps,
                    report_to=[], use_cpu=True, seed=s.session.seed, data_seed=s.session.seed,
                    gradient_checkpointing=False, bf16=False,  # SFTConfig defaults both to True
                    completion_only_loss=True, packing=False, max_length=None, dataloader_num_workers=0,
                    remove_unused_columns=True, dataset_num_proc=None)
    trainer = InOrder(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                      callbacks=[Clock()])
    trainer.train()
    tokens = sum(len(r["input_ids"]) for r in rows[4:])
    ck = sorted(out.glob("checkpoint-*"))[-1]
    losses = [x["loss"] for x in trainer.state.log_history if "loss" in x]
    return {"tokens_per_s": tokens / (stamps[-1] - stamps[0]), "checkpoint_mb": _dir_mb(ck),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad), "losses": losses}


def child(side: str, args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="tt-lora-bench-") as tmp:
        ws = Path(tmp)
        (ws / "runs").mkdir()
        res = side_tuneterm(ws, args) if side == "tuneterm" else side_trl(ws, args)
    _sides.emit(res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--examples", type=int, default=120)
    ap.add_argument("--max-length", type=int, default=160)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--side", choices=("tuneterm", "trl"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return child(args.side, args)
    sides = ["tuneterm", "trl"]
    results = _sides.run_sides(__file__, sides, args.repeats, _sides.options(args), required=True)
    med = {s: {k: statistics.median(r[k] for r in results[s]) for k in ("tokens_per_s", "peak_rss_mb",
                                                                         "checkpoint_mb", "trainable")}
           for s in sides}
    print(f"SmolLM2-135M LoRA r16 all-linear, {args.steps} steps x batch 4, {args.threads} threads, "
          f"{args.repeats} repeat(s), medians")
    print(f"{'side':10} {'tokens/s':>9} {'peak RSS MB':>12} {'ckpt MB':>8} {'trainable':>10}")
    for s in sides:
        m = med[s]
        print(f"{s:10} {m['tokens_per_s']:9.1f} {m['peak_rss_mb']:12.0f} {m['checkpoint_mb']:8.1f} "
              f"{int(m['trainable']):>10,}")
    full = results["tuneterm"][0]["full_ft_checkpoint_mb"]
    print(f"tuneterm/TRL tokens/s: {med['tuneterm']['tokens_per_s'] / med['trl']['tokens_per_s']:.2f}x; "
          f"tuneterm checkpoint {med['tuneterm']['checkpoint_mb']:.1f} MB = "
          f"{100 * med['tuneterm']['checkpoint_mb'] / full:.2f}% of a full fine-tune's ({full:.0f} MB)")
    a, b = results["tuneterm"][0]["losses"], results["trl"][0]["losses"]
    print("first losses tuneterm:", [round(x, 4) for x in a[:4]], " TRL:", [round(x, 4) for x in b[:4]])


if __name__ == "__main__":
    main()
