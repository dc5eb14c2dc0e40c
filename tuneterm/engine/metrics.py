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
