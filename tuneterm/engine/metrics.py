"""Validation metrics: loss, accuracy, macro-F1 (computed here, no extra dependency)."""

from __future__ import annotations

import numpy as np
import torch

from tuneterm.engine import data as D


def macro_f1(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or predictions."""
    f1s = []
    for c in range(num_classes):
        tp = int(np.sum((pred == c) & (gold == c)))
        fp = int(np.sum((pred == c) & (gold != c)))
        fn = int(np.sum((pred != c) & (gold == c)))
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0


@torch.no_grad()
def evaluate(model, enc: D.Encoded, pad_id: int, device, batch_size: int, num_classes: int) -> dict:
    """Mean cross-entropy, accuracy and macro-F1 over the validation set, in order.

    Examples are batched by length (sorted) so that padding stays small; the result does
    not depend on the order up to float summation, which is itself fixed."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(x) for x in enc.ids], kind="stable")
    total_loss = 0.0
    preds = np.empty(len(enc), dtype=np.int64)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = D.collate(enc, idx, pad_id, device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        total_loss += float(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"))
        preds[idx] = logits.argmax(-1).cpu().numpy()
    model.train(was_training)
    gold = enc.labels
    return {"loss": total_loss / max(1, len(enc)), "accuracy": float(np.mean(preds == gold)) if len(enc) else 0.0,
            "f1": macro_f1(preds, gold, num_classes)}


def summary(run_dir) -> dict:
    """The end of a run, for the CLI: steps, last loss, the last validation metrics, the
    best validation accuracy."""
    from tuneterm.rundir import read_jsonl

    rows = read_jsonl(run_dir / "metrics.jsonl")
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    out = {"run_dir": str(run_dir), "steps": train[-1]["step"] if train else 0,
           "last_loss": train[-1]["loss"] if train else None}
    if evals:
        last = evals[-1]
        out.update({k: v for k, v in last.items() if k.startswith("val_")})
        if any("val_accuracy" in e for e in evals):
            out["best_val_accuracy"] = max(e.get("val_accuracy", float("-inf")) for e in evals)
    return out
