"""Whole fine-tuning steps on one CUDA GPU: tuneterm's step against the HF Trainer, the
Trainer with Liger-Kernel, and (LoRA) PEFT + TRL, at identical settings.

    python benchmarks/gpu_e2e.py                  # the default plan, < 5 min on an H100/H200
    python benchmarks/gpu_e2e.py --plan full      # every model x seq x mode x side
    python benchmarks/gpu_e2e.py --cpu-smoke      # tiny sizes on the CPU: checks the script

Models are built from configs (random weights, no hub): a BERT-base-shaped classifier
(batch 32 x 128) and SmolLM2-135M-, Qwen2.5-0.5B-, Llama-3.2-1B-shaped causal LMs at seq
1024 / 2048, rows packed full of tokens (no padding; one causal sequence a row), bf16,
full fine-tuning and LoRA (r 16, alpha 32, all linear layers, no adapter dropout).

Sides (the same model, data, batch, lr 1e-5, wd 0.01, clip 1.0, betas, SDPA attention):
  tt-triton, tt-torch   tuneterm's step as the trainer runs it (engine/trainer.py): the
                        model's parameters in bf16 with fp32 masters in the flat AdamW,
                        SeededDropout sites, the batch and its loss from the task the trainer
                        uses (engine/tasks: collate and loss; for LMs the fused linear
                        cross-entropy over the trained positions), grad norm + clip;
                        --kernels triton / torch
  hf                    transformers.Trainer: fp32 parameters, bf16=True (autocast),
                        optim adamw_torch_fused, attn_implementation sdpa
  liger                 the same with use_liger_kernel=True (skipped when liger_kernel is missing)
  peft                  (LoRA) the Trainer over a PEFT model (bf16 autocast, fused AdamW)
  trl                   (LoRA) TRL's SFTTrainer with peft_config (skipped when trl does not import)
No side recomputes activations: gradient_checkpointing=False is passed to every Trainer
(TRL's SFTConfig would turn it on by default).

Per row: step time (median of the timed steps), tokens/s, MFU = (6 x params + 12 x layers
x hidden x seq) x tokens/s over the card's dense bf16 peak (PaLM's convention; for LoRA the
6 x params of the whole model, as asked, though its frozen weights need no weight
gradients), peak memory (max allocated, reset per side), and for SmolLM2 at seq 2048 the
largest batch that fits (doubling from 1 until out of memory). CSV and markdown go to
--out (default $OUT, else benchmarks/results/).
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
# benchmarks/ itself off the path: its kernels.py would shadow the `kernels` distribution
# that transformers probes for; the repository root on it (no editable install on the device)
sys.path = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from the vendors' data sheets
PEAKS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H100": 989.4,
         "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
MODELS = {  # name: (family, config kwargs)
    "bert-base": ("bert", dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                               intermediate_size=3072, num_labels=4)),
    "smollm2-135m": ("llama", dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
                                   rope_theta=100000.0, max_position_embeddings=8192)),
    "qwen2.5-0.5b": ("qwen2", dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                   num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True,
                                   rope_theta=1000000.0, max_position_embeddings=32768)),
    "llama-3.2-1b": ("llama", dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                   num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True,
                                   rope_theta=500000.0, max_position_embeddings=131072)),
}
TINY = {"bert": dict(vocab_size=211, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=48, num_labels=4),
        "llama": dict(vocab_size=211, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
        "qwen2": dict(vocab_size=211, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)}
LM_SIDES = ("tt-triton", "tt-torch", "hf", "liger")
LORA_SIDES = ("tt-triton", "tt-torch", "peft", "trl")
# (model, seq, batch, mode, sides): the default plan keeps the call under 8 minutes
DEFAULT_PLAN = [
    ("bert-base", 128, 32, "full", ("tt-triton", "tt-torch", "hf")),
    ("smollm2-135m", 2048, 8, "full", LM_SIDES),
    ("smollm2-135m", 1024, 16, "full", ("tt-triton", "hf")),
    ("smollm2-135m", 2048, 8, "lora", LORA_SIDES),
    ("qwen2.5-0.5b", 2048, 4, "full", ("tt-triton", "hf", "liger")),
    ("llama-3.2-1b", 2048, 4, "full", ("tt-triton", "hf", "liger")),
    ("llama-3.2-1b", 2048, 4, "lora", ("tt-triton", "trl", "peft")),
]
MAX_BATCH = ("smollm2-135m", 2048, ("tt-triton", "hf", "liger"))
LR, WD, CLIP, BETAS, EPS = 1e-5, 0.01, 1.0, (0.9, 0.999), 1e-8


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-smoke", "--dry-run", dest="smoke", action="store_true",
                    help="tiny models on the CPU (tt-triton through the Triton interpreter): checks the script")
    ap.add_argument("--plan", choices=["default", "full"], default="default")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per side (default 6; smoke 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; smoke 1)")
    ap.add_argument("--no-max-batch", action="store_true", help="skip the largest-batch search")
    ap.add_argument("--out", default=None, help="folder for gpu_e2e.csv / gpu_e2e.md")
    ap.add_argument("--budget-s", type=float, default=285.0,
                    help="rows not started by then are reported as skipped (the one device call has 8 minutes)")
    return ap.parse_args(argv)


def plan(args) -> list:
    if args.plan == "default":
        rows = DEFAULT_PLAN
    else:
        rows = [("bert-base", 128, 32, "full", ("tt-triton", "tt-torch", "hf"))]
        for m in ("smollm2-135m", "qwen2.5-0.5b", "llama-3.2-1b"):
            for seq in (1024, 2048):
                batch = {"smollm2-135m": 8, "qwen2.5-0.5b": 4, "llama-3.2-1b": 4}[m] * (2048 // seq)
                rows += [(m, seq, batch, "full", LM_SIDES), (m, seq, batch, "lora", LORA_SIDES)]
    if args.smoke:  # every family and side once, tiny
        return [("bert-base", 16, 2, "full", ("tt-triton", "tt-torch", "hf")),
                ("smollm2-135m", 32, 2, "full", LM_SIDES), ("smollm2-135m", 32, 2, "lora", LORA_SIDES),
                ("qwen2.5-0.5b", 32, 2, "full", ("tt-torch", "hf"))]
    return rows


# ---- models and data ------------------------------------------------------------------

def build(name: str, smoke: bool, dtype):
    import torch
    import transformers as T

    family, kw = MODELS[name]
    kw = dict(TINY[family]) if smoke else dict(kw)
    torch.manual_seed(0)
    if family == "bert":
        return T.BertForSequenceClassification(T.BertConfig(**kw, attn_implementation="sdpa")).to(dtype)
    cfg = (T.LlamaConfig if family == "llama" else T.Qwen2Config)(**kw, attn_implementation="sdpa")
    return T.LlamaForCausalLM(cfg).to(dtype) if family == "llama" else T.Qwen2ForCausalLM(cfg).to(dtype)


def batches(model, seq: int, batch: int, n: int, device) -> list:
    import torch

    g = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    out = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (batch, seq), generator=g)
        if model.config.model_type == "bert":
            out.append({"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
                        "labels": torch.randint(0, model.config.num_labels, (batch,), generator=g).to(device)})
        else:  # packed rows: every token real, labels = input_ids (shifted in the loss)
            out.append({"input_ids": ids.to(device), "labels": ids.clone().to(device)})
    return out


def lora_config():
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", bias="none",
                      task_type="CAUSAL_LM")


# ---- the sides ------------------------------------------------------------------------

def task_batches(task, model, seq: int, batch: int, n: int, device) -> list:
    """The rows of ``batches`` as the trainer's task collates them: an LM row is one
    example (its targets are the next tokens: the last position trains nothing), a BERT
    row one labelled text."""
    import numpy as np

    from tuneterm.engine import data as D
    from tuneterm.engine import lm_data as LM

    out = []
    for b in batches(model, seq, batch, n, "cpu"):
        ids = b["input_ids"].tolist()
        if model.config.model_type == "bert":
            units = D.Encoded(ids, b["labels"].numpy().astype(np.int64))
        else:
            units = LM.Examples([LM.Example(r, r[1:] + [LM.IGNORE], [], "", "") for r in ids])
        out.append(task.collate(units, range(batch), device))
    return out


def side_tuneterm(impl: str, name, seq, batch, mode, ctx) -> dict:
    import torch

    from tuneterm.engine import dropout as drop
    from tuneterm.engine import optim
    from tuneterm.engine.tasks.causal_lm import CausalLMTask
    from tuneterm.engine.tasks.classification import SequenceClassificationTask

    dtype = torch.bfloat16 if ctx.cuda else torch.float32
    model = build(name, ctx.smoke, dtype).to(ctx.device)
    dctx = drop.DropoutContext(0)
    drop.install(model, dctx, getattr(model.config, "hidden_dropout_prob", 0.0), impl)
    if mode == "lora":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config())
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    hp = SimpleNamespace(adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_eps=EPS)
    opt = optim.build(named, hp, impl=impl, dtype=dtype)
    task = SequenceClassificationTask() if model.config.model_type == "bert" else CausalLMTask()
    task.impl, task.pad_id = impl, 0  # as the trainer sets them (rows are full: no padding)
    data = task_batches(task, model, seq, batch, ctx.warmup + ctx.steps, ctx.device)
    model.train()

    def step(i):  # Trainer._forward_backward with one micro-batch, then Trainer.train_step's update
        dctx.at(i, 0)
        loss = task.loss(model, data[i])
        loss.backward()
        gn = float(opt.grad_norm())
        opt.step(LR, WD, min(1.0, CLIP / (gn + 1e-6)))
        opt.zero_grad()
        return float(loss)

    return timed(step, ctx, model)


def _trainer_args(ctx, batch, steps, liger=False, **extra):
    from transformers import TrainingArguments

    kw = dict(output_dir=str(ctx.tmp), max_steps=steps, per_device_train_batch_size=batch, learning_rate=LR,
              weight_decay=WD, max_grad_norm=CLIP, adam_beta1=BETAS[0], adam_beta2=BETAS[1], adam_epsilon=EPS,
              lr_scheduler_type="constant", logging_steps=10**6, save_strategy="no", report_to=[],
              dataloader_num_workers=0, remove_unused_columns=False, seed=0, bf16=ctx.cuda,
              optim="adamw_torch_fused" if ctx.cuda else "adamw_torch", use_cpu=not ctx.cuda,
              use_liger_kernel=liger, disable_tqdm=True, gradient_checkpointing=False, **extra)
    return kw


class _StepTimer:
    def __init__(self, ctx):
        self.ctx, self.t, self.times = ctx, 0.0, []

    def callback(self):
        from transformers import TrainerCallback

        timer = self

        class CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer.ctx.sync()
                timer.t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                timer.ctx.sync()
                timer.times.append(time.perf_counter() - timer.t)
        return CB()


def side_hf(kind: str, name, seq, batch, mode, ctx) -> dict:
    import torch
    from transformers import Trainer, TrainingArguments

    if kind == "liger":
        import liger_kernel.transformers  # noqa: F401  - skipped (ImportError) where it is missing
    model = build(name, ctx.smoke, torch.float32).to(ctx.device)  # fp32 weights, bf16 autocast
    if mode == "lora":
        from peft import get_peft_model

        model = get_peft_model(model, lora_config())
    rows = [{k: v[j].cpu() for k, v in b.items()} for b in batches(model, seq, batch, ctx.warmup + ctx.steps, "cpu")
            for j in range(batch)]
    timer = _StepTimer(ctx)
    ctx.reset_peak()
    args = TrainingArguments(**_trainer_args(ctx, batch, ctx.warmup + ctx.steps, liger=kind == "liger"))
    Trainer(model=model, args=args, train_dataset=rows, callbacks=[timer.callback()]).train()
    return summarize(timer.times[ctx.warmup:], ctx, model)


def side_trl(name, seq, batch, mode, ctx) -> dict:
    import torch
    from trl import SFTConfig, SFTTrainer

    from datasets import Dataset

    model = build(name, ctx.smoke, torch.float32).to(ctx.device)
    data = batches(model, seq, batch, ctx.warmup + ctx.steps, "cpu")
    ds = Dataset.from_dict({"input_ids": [r.tolist() for b in data for r in b["input_ids"]]})
    timer = _StepTimer(ctx)
    ctx.reset_peak()
    kw = _trainer_args(ctx, batch, ctx.warmup + ctx.steps)
    kw.pop("use_liger_kernel")
    args = SFTConfig(**kw, max_length=seq, packing=False, dataset_kwargs={"skip_prepare_dataset": True})
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, peft_config=lora_config(),
                         processing_class=_tokenizer(model.config.vocab_size), callbacks=[timer.callback()])
    trainer.train()
    return summarize(timer.times[ctx.warmup:], ctx, trainer.model)


def _tokenizer(vocab: int):
    """A word-level tokenizer made here (no hub): TRL wants one for padding."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(vocab)}
    tok = Tokenizer(models.WordLevel(words, unk_token="t0"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0", eos_token="t1", unk_token="t0")


def timed(step, ctx, model) -> dict:
    for i in range(ctx.warmup):
        step(i)
    ctx.sync()
    ctx.reset_peak()
    times = []
    for i in range(ctx.warmup, ctx.warmup + ctx.steps):
        ctx.sync()
        t = time.perf_counter()
        step(i)
        ctx.sync()
        times.append(time.perf_counter() - t)
    return summarize(times, ctx, model)


def summarize(times, ctx, model) -> dict:
    return {"step_s": statistics.median(times) if times else float("nan"), "peak_gb": ctx.peak_gb(),
            "params": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def run_side(side, name, seq, batch, mode, ctx) -> dict:
    if side.startswith("tt-"):
        return side_tuneterm(side[3:], name, seq, batch, mode, ctx)
    if side == "trl":
        return side_trl(name, seq, batch, mode, ctx)
    return side_hf(side, name, seq, batch, mode, ctx)


def measure(side, name, seq, batch, mode, ctx) -> dict:
    row = {"model": name, "seq": seq, "batch": batch, "mode": mode, "side": side}
    if side == "tt-triton" and not ctx.cuda and os.environ.get("TRITON_INTERPRET") != "1":
        return {**row, "error": "skipped: no CUDA and no interpreter"}
    try:
        res = run_side(side, name, seq, batch, mode, ctx)
    except ImportError as e:
        return {**row, "error": f"skipped: {e}"[:200]}
    except Exception as e:  # a side that fails must not stop the others
        if ctx.smoke and not isinstance(e, MemoryError):
            raise
        return {**row, "error": f"{type(e).__name__}: {e}"[:300]}
    finally:
        ctx.free()
    fam, kw = MODELS[name]
    layers, hidden = (TINY[fam] if ctx.smoke else kw)["num_hidden_layers"], (TINY[fam] if ctx.smoke else kw)["hidden_size"]
    tokens = batch * seq
    flops = (6 * res["params"] + 12 * layers * hidden * seq) * tokens
    tps = tokens / res["step_s"]
    mfu = flops / res["step_s"] / (ctx.peak_tflops * 1e12) if ctx.peak_tflops else float("nan")
    return {**row, "step_ms": round(res["step_s"] * 1e3, 2), "tokens_s": round(tps), "mfu": round(mfu, 4),
            "peak_gb": round(res["peak_gb"], 3), "params": res["params"], "trainable": res["trainable"]}


def max_batch(side, name, seq, ctx) -> int | None:
    """The largest power-of-two batch with which two steps fit (0: not even 1; None: the
    side is skipped here)."""
    best, b = 0, 1
    steps, warm = ctx.steps, ctx.warmup
    ctx.steps, ctx.warmup = 1, 1
    try:
        while b <= (4 if ctx.smoke else 256):
            row = measure(side, name, seq, b, "full", ctx)
            if "error" in row:
                return None if row["error"].startswith("skipped") else best
            best, b = b, b * 2
    finally:
        ctx.steps, ctx.warmup = steps, warm
    return best


class Ctx:
    def __init__(self, args, tmp):
        import torch

        self.torch, self.smoke, self.tmp = torch, args.smoke, tmp
        self.cuda = torch.cuda.is_available() and not args.smoke
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.steps = args.steps or (2 if args.smoke else 6)
        self.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 3)
        self.card = torch.cuda.get_device_name() if self.cuda else "cpu (smoke run)"
        self.peak_tflops = next((v for k, v in PEAKS.items() if k in self.card), None) if self.cuda else None

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self):
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gb(self):
        return self.torch.cuda.max_memory_allocated() / 2**30 if self.cuda else float("nan")

    def free(self):
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()


FIELDS = ["model", "seq", "batch", "mode", "side", "step_ms", "tokens_s", "mfu", "peak_gb", "params", "trainable",
          "error"]


def report(rows, maxb, ctx, out: Path) -> str:
    with open(out / "gpu_e2e.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS + ["max_batch"])
        w.writeheader()
        for r in rows:
            w.writerow(r)
        for (side, name, seq), b in maxb.items():
            w.writerow({"model": name, "seq": seq, "side": side, "mode": "full", "max_batch": b})
    lines = [f"# Whole-step benchmark ({ctx.card}, {datetime.now(timezone.utc):%Y-%m-%d})", "",
             "| model | seq x batch | mode | side | step ms | tokens/s | MFU | peak GB | vs hf | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = next((x for x in rows if x["side"] in ("hf", "peft") and "error" not in x and
                    (x["model"], x["seq"], x["mode"]) == (r["model"], r["seq"], r["mode"])), None)
        vs = f"{r['tokens_s'] / ref['tokens_s']:.2f}x" if ref and "error" not in r else ""
        lines.append(f"| {r['model']} | {r['seq']} x {r['batch']} | {r['mode']} | {r['side']} | {r.get('step_ms', '')} "
                     f"| {r.get('tokens_s', '')} | {r.get('mfu', '')} | {r.get('peak_gb', '')} | {vs} "
                     f"| {r.get('error', '')} |")
    if maxb:
        lines += ["", "Largest batch that fits (seq 2048, full fine-tuning): " +
                  ", ".join(f"{side} {'n/a' if b is None else b}" for (side, _, _), b in maxb.items())]
    text = "\n".join(lines) + "\n"
    (out / "gpu_e2e.md").write_text(text)
    return text


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton's first import
    import tempfile

    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("benchmarks/gpu_e2e.py needs a CUDA GPU and found none (--cpu-smoke runs tiny sizes on the CPU)",
              file=sys.stderr)
        return 2
    out = Path(args.out or os.environ.get("OUT") or ROOT / "benchmarks" / "results")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Ctx(args, Path(tmp))
        t0 = time.time()
        rows = []
        over = lambda: not args.smoke and time.time() - t0 > args.budget_s  # noqa: E731
        for name, seq, batch, mode, sides in plan(args):
            for side in sides:
                if over():
                    rows.append({"model": name, "seq": seq, "batch": batch, "mode": mode, "side": side,
                                 "error": "skipped: time budget"})
                    continue
                row = measure(side, name, seq, batch, mode, ctx)
                rows.append(row)
                print(f"[{time.time() - t0:6.1f}s] " + " ".join(f"{k}={row[k]}" for k in FIELDS if k in row),
                      flush=True)
        maxb = {}
        if not args.no_max_batch:
            name, seq, sides = MAX_BATCH
            seq = 32 if args.smoke else seq
            for side in sides:
                if over():
                    break
                maxb[(side, name, seq)] = max_batch(side, name, seq, ctx)
                print(f"[{time.time() - t0:6.1f}s] max batch {side} {name} seq {seq}: {maxb[(side, name, seq)]}",
                      flush=True)
        print(report(rows, maxb, ctx, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
