"""Classification's metrics, computed here (no extra dependency) and once: ``class_logits``
runs the model over examples batched as the run's evaluation batches them, and every
classification result is made from its logits and summed loss — the run's evaluation
(``evaluate``: loss, accuracy, macro-F1), `tuneterm eval` on a file and the confusion picture
(``report``: per class too, and the confusion matrix), `tuneterm predict`. Also the end of
a run for the CLI (``summary``)."""

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
def class_logits(model, enc: D.Encoded, pad_id: int, device, batch_size: int,
                 progress=None) -> tuple[np.ndarray, float]:
    """fp32 logits per example of ``enc`` (in its order), and the cross-entropy against
    ``enc.labels`` summed over every example. Examples are batched by length (sorted,
    stable) so that padding stays small; the batches and the order their losses are added
    in are fixed, so the result is too. ``progress(done)`` after each batch."""
    was_training = model.training
    model.eval()
    order = np.argsort([len(x) for x in enc.ids], kind="stable")
    out: np.ndarray | None = None
    total = 0.0
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = D.collate(enc, idx, pad_id, device)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            total += float(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"))
            if out is None:
                out = np.zeros((len(enc), logits.shape[-1]), dtype=np.float32)
            out[idx] = logits.cpu().numpy()
            if progress:
                progress(min(start + batch_size, len(order)))
    finally:
        model.train(was_training)
    return (np.zeros((0, 0), dtype=np.float32) if out is None else out), total


def scores(logits: np.ndarray, gold: np.ndarray, loss_sum: float, num_classes: int) -> dict:
    """Mean cross-entropy, accuracy and macro-F1 from ``class_logits``' result."""
    n = len(gold)
    pred = logits.argmax(-1) if n else np.zeros(0, dtype=np.int64)
    return {"loss": loss_sum / max(1, n), "accuracy": float(np.mean(pred == gold)) if n else 0.0,
            "f1": macro_f1(pred, gold, num_classes)}


def evaluate(model, enc: D.Encoded, pad_id: int, device, batch_size: int, num_classes: int) -> dict:
    """The run's evaluation on the validation set: loss, accuracy, macro-F1."""
    logits, loss_sum = class_logits(model, enc, pad_id, device, batch_size)
    return scores(logits, enc.labels, loss_sum, num_classes)


def report(logits: np.ndarray, gold: np.ndarray, loss_sum: float, label_names: list) -> dict:
    """``scores`` and the number of examples, per-class precision/recall/F1/support and the
    confusion matrix (rows: gold)."""
    pred = logits.argmax(-1) if len(gold) else np.zeros(0, dtype=np.int64)
    k = len(label_names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (gold, pred), 1)
    per_class = {}
    for c, name in enumerate(label_names):
        tp, fp, fn = int(cm[c, c]), int(cm[:, c].sum() - cm[c, c]), int(cm[c, :].sum() - cm[c, c])
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        per_class[name] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                           "support": int(cm[c, :].sum())}
    return {"examples": len(gold), **scores(logits, gold, loss_sum, k), "per_class": per_class,
            "confusion": {"labels": list(label_names), "matrix": cm.tolist()}}


def summary(run_dir) -> dict:
    """The end of a run, for the CLI: steps, last loss, the last validation metrics, the
    best validation accuracy."""
    from tuneterm.rundir import RunDir, read_jsonl

    rows = read_jsonl(RunDir(run_dir).metrics)
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
