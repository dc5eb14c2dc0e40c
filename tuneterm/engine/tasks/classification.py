"""Sequence classification: a label per text, cross-entropy on the classifier's logits,
loss / accuracy / macro-F1 on the validation set."""

from __future__ import annotations

import torch

from tuneterm.engine import data as D
from tuneterm.engine.metrics import evaluate
from tuneterm.engine.models import build_model
from tuneterm.engine.tasks.base import BaseTask, TaskData


class SequenceClassificationTask(BaseTask):
    name = "sequence-classification"
    metrics = ("val_loss", "val_accuracy", "val_f1")

    def __init__(self) -> None:
        super().__init__()
        self.pad_id: int | None = None
        self.label_names: list = []

    def mode(self, metric: str) -> str:
        return "min" if metric == "val_loss" else "max"

    def load_data(self, session, workspace, tokenizer) -> TaskData:
        corpus = D.load_corpus(session.data, workspace, session.session.seed)
        self.label_names = corpus.label_names
        self.pad_id = tokenizer.pad_token_id
        train = D.encode(corpus.train, tokenizer, corpus.label_names, session.data.max_length)
        val = D.encode(corpus.val, tokenizer, corpus.label_names, session.data.max_length)
        return TaskData(train, val, {"train_examples": len(train), "val_examples": len(val),
                                     "labels": corpus.label_names})

    def build_model(self, session, workspace, tokenizer, data: TaskData) -> torch.nn.Module:
        return build_model(session.model.source, len(self.label_names), tokenizer=tokenizer, workspace=workspace,
                           seed=session.session.seed)

    def collate(self, dataset, indices, device) -> dict:
        return D.collate(dataset, indices, self.pad_id, device)

    def batch_weight(self, batch: dict) -> int:
        return int(batch["labels"].shape[0])

    def loss(self, model, batch: dict) -> torch.Tensor:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return torch.nn.functional.cross_entropy(out.logits.float(), batch["labels"])

    def evaluate(self, model, data: TaskData, device, batch_size: int) -> dict:
        res = evaluate(model, data.val, self.pad_id, device, batch_size, len(self.label_names))
        return {"val_loss": res["loss"], "val_accuracy": res["accuracy"], "val_f1": res["f1"]}

    def samples(self, model, data: TaskData, device, session, step: int) -> list:
        return []

    def evaluate_file(self, run, path) -> dict:
        from tuneterm.engine.predict import evaluate_file

        return evaluate_file(run, path)

    def predict_file(self, run, path, *, probs: bool, max_new_tokens, make_progress) -> tuple[list, list]:
        from tuneterm.engine.predict import classify_file

        return classify_file(run, path, probs, make_progress)
