"""Causal language modelling (supervised fine-tuning): next-token cross-entropy on the
trained tokens (lm_data.py: formats, masks, packing), validation loss / perplexity /
token accuracy, and greedy samples for a fixed set of validation prompts.

The loss of a batch is the mean over its trained tokens (``batch_weight``), so the
trainer's weighting by ``batch_weight / total`` makes an optimizer step's loss the mean
over every trained token of its micro-batches, whatever their padding or packing. Only
the hidden states at trained positions go through the LM head, and in training through
tuneterm_kernels' fused linear cross-entropy (a bias-free linear head, tied or not): chunks
of logits, never the [trained tokens x vocab] block and its gradient (the Triton kernel on
CUDA with `kernels = "triton"`, the chunked PyTorch path otherwise). A logit scale or final
soft cap the model's forward applies (Cohere, Granite, Gemma-2: logit_head.py) is applied
there and in the metrics too, so the loss is the model's own.

Built-in data: ``builtin:bbc-news`` gives one conversation per article — the user turn
asks for a headline for the article's lead paragraph, the assistant turn is its title
(articles whose prompt does not fit ``max_length`` are left out and counted);
``builtin:tweet-sentiment`` gives the tweets as plain text.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from tuneterm.engine import lm_data as LM
from tuneterm.engine import lm_records as R
from tuneterm.engine import logit_head
from tuneterm.engine.generate import greedy
from tuneterm.engine.models import build_causal_lm
from tuneterm.engine.tasks.base import BaseTask, TaskData
from tuneterm.errors import UserError
from tuneterm.session.schema import BUILTIN_DATA

HEADLINE_PROMPT = "Write a short headline for this news article:\n\n"


def headline_records() -> list:
    from tuneterm.engine.data import _bbc_news

    out = []
    for i, text in enumerate(_bbc_news().texts):
        parts = [p.strip() for p in text.split("\n\n") if p.strip()]
        if len(parts) < 2:
            continue
        out.append(R.Record(f"builtin:bbc-news:{i + 1}", "messages", messages=[
            {"role": "user", "content": HEADLINE_PROMPT + parts[1]},
            {"role": "assistant", "content": parts[0]}]))
    return out


def _builtin(source: str) -> list:
    if source == "builtin:bbc-news":
        return headline_records()
    if source == "builtin:tweet-sentiment":
        from tuneterm.engine.data import _tweets

        return [R.Record(f"builtin:tweet-sentiment:{i + 1}", "text", text=t) for i, t in enumerate(_tweets().texts)]
    raise UserError(f"data.source: unknown built-in {source!r}; expected one of {', '.join(BUILTIN_DATA)}")


def _local(path: str, workspace) -> Path:
    p = Path(path)
    return p if p.is_absolute() or workspace is None else Path(workspace) / p


def split_records(spec, workspace, seed: int, read=R.records_from, builtin=None) -> tuple[list, list, bool]:
    """(train, val, strict): the records, validation split off deterministically from the
    seed. ``read(path, spec, what, fmt=None)`` -> (format, records) reads a file, ``builtin(source)``
    a built-in (the preference task reads its own)."""
    strict = not spec.source.startswith("builtin:")
    if strict:
        fmt, records = read(_local(spec.source, workspace), spec, "data.source")
    else:
        records, fmt = (builtin or _builtin)(spec.source), None
    if spec.validation:
        train = records
        _, val = read(_local(spec.validation, workspace), spec, "data.validation", fmt=fmt)
    else:
        perm = np.random.default_rng([seed, 0x5EED]).permutation(len(records))
        n_val = max(1, int(round(len(perm) * spec.validation_split)))
        if n_val >= len(perm):
            raise UserError(f"data.validation_split: {spec.validation_split} leaves no training examples")
        val = [records[i] for i in perm[:n_val]]
        train = [records[i] for i in perm[n_val:]]
    return train, val, strict


def encode_splits(train_r, val_r, encode, left_out, max_length: int, kept_means: str) -> tuple:
    """(train, val, train counts, val counts, lost): both splits encoded by ``encode(records)``
    -> (kept, counts), and ``left_out(counts, total, max_length)``'s line for each; a split
    that keeps nothing is a UserError (``kept_means``: "example keeps a trained token", ...)."""
    (train, t_info), (val, v_info) = encode(train_r), encode(val_r)
    lost = {what: left_out(i, len(r), max_length)
            for what, i, r in (("training", t_info, train_r), ("validation", v_info, val_r))}
    for key, what, kept in (("data.source", "training", train), ("data.validation", "validation", val)):
        if not kept:
            raise UserError(f"{key}: no {what} {kept_means} at max_length = {max_length} ({lost[what]})")
    return train, val, t_info, v_info, lost


class CausalLMTask(BaseTask):
    name = "causal-lm"
    metrics = ("val_loss", "val_perplexity", "val_token_accuracy")

    def __init__(self) -> None:
        super().__init__()
        self.pad_id = 0
        self.eos_id = None
        self.tokenizer = None
        self.packed = False
        self.want_ckpt = False
        self.impl: str | None = None  # the trainer's kernels ("triton" | "torch"), for the fused loss

    def mode(self, metric: str) -> str:
        return "max" if metric == "val_token_accuracy" else "min"

    def load_data(self, session, workspace, tokenizer) -> TaskData:
        spec = session.data
        LM.prepare_tokenizer(tokenizer)
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_id = tokenizer.eos_token_id
        train_r, val_r, strict = split_records(spec, workspace, session.session.seed)
        # cap before encoding (the order is already the seeded one)
        if spec.max_samples:
            train_r = train_r[: spec.max_samples]
        if spec.max_eval_samples:
            val_r = val_r[: spec.max_eval_samples]
        train, val, t_info, v_info, lost = encode_splits(
            train_r, val_r, lambda rs: LM.encode_all(rs, tokenizer, spec.max_length, spec.loss_on, strict=strict),
            LM.left_out, spec.max_length, "example keeps a trained token")
        lengths = [len(e.ids) for e in train]
        info = {"train_examples": len(train), "val_examples": len(val),
                "format": train_r[0].fmt, "loss_on": spec.loss_on,
                "trained_tokens": sum(e.trained for e in train), "train_tokens": sum(lengths),
                "no_trained_tokens": t_info["no_trained_tokens"] + v_info["no_trained_tokens"],
                "truncated": t_info["truncated"] + v_info["truncated"]}
        if not strict:
            info["long_prompts_dropped"] = t_info["long_prompts_dropped"] + v_info["long_prompts_dropped"]
        self.packed = spec.packing
        if spec.packing:
            dataset = LM.Packed(train, spec.max_length)
            before = LM.padding_share(lengths, spec.max_length)
            after = LM.padding_share(lengths, spec.max_length, dataset.packs)
            info.update(packed_rows=len(dataset), padding_unpacked=round(before, 4),
                        padding_packed=round(after, 4), packing_saved=round(1 - len(dataset) / len(train), 4))
        else:
            dataset = LM.Examples(train)
        self.want_ckpt = session.runtime.gradient_checkpointing
        return TaskData(dataset, LM.Examples(val), info,
                        warnings=[f"{what} data: {line}" for what, line in lost.items() if line])

    def build_model(self, session, workspace, tokenizer, data: TaskData) -> torch.nn.Module:
        model = build_causal_lm(session.model.source, tokenizer=tokenizer, workspace=workspace,
                                seed=session.session.seed)
        if model.config.vocab_size < len(tokenizer):
            raise UserError(f"model.source: the model's vocabulary ({model.config.vocab_size}) is smaller than "
                            f"its tokenizer's ({len(tokenizer)})")
        return model

    def collate(self, dataset, indices, device) -> dict:
        return LM.collate(dataset.rows(indices), self.pad_id, device, packed=isinstance(dataset, LM.Packed))

    def batch_weight(self, batch: dict) -> int:
        return int((batch["labels"] != LM.IGNORE).sum())

    def _hidden_and_head(self, model, batch):
        if self.want_ckpt and model.training:
            from tuneterm.engine import grad_ckpt

            grad_ckpt.enable(model, grad_ckpt.context_of(model))
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        kwargs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
        hidden = inner.base_model(**kwargs, use_cache=False).last_hidden_state
        return hidden, inner.get_output_embeddings()

    def token_logits(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's logits (fp32) at the trained positions, and their targets."""
        hidden, head = self._hidden_and_head(model, batch)
        sel = batch["labels"] != LM.IGNORE
        return logit_head.apply(head(hidden[sel]).float(), *logit_head.transform(model)), batch["labels"][sel]

    def loss(self, model, batch: dict) -> torch.Tensor:
        hidden, head = self._hidden_and_head(model, batch)
        sel = batch["labels"] != LM.IGNORE
        h, targets = hidden[sel], batch["labels"][sel]
        mult, cap = logit_head.transform(model)  # a scale or soft cap the model's forward applies
        if type(head) is torch.nn.Linear and head.bias is None and targets.numel():
            from tuneterm_kernels.linear_ce import linear_cross_entropy

            return linear_cross_entropy(h.to(head.weight.dtype), head.weight, targets,
                                        impl=self.impl if h.is_cuda else "torch", logit_scale=mult, softcap=cap)
        logits = logit_head.apply(head(h).float(), mult, cap)  # another head (a bias, an adapter on it)
        return torch.nn.functional.cross_entropy(logits, targets, reduction="sum") / max(1, targets.numel())

    @torch.no_grad()
    def evaluate(self, model, data: TaskData, device, batch_size: int) -> dict:
        was = model.training
        model.eval()
        total, correct, n = 0.0, 0, 0
        try:
            val = data.val
            for a in range(0, len(val), batch_size):
                batch = self.collate(val, range(a, min(a + batch_size, len(val))), device)
                logits, targets = self.token_logits(model, batch)
                total += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
                correct += int((logits.argmax(-1) == targets).sum())
                n += targets.numel()
        finally:
            model.train(was)
        loss = total / n
        return {"val_loss": loss, "val_perplexity": math.exp(min(loss, 700.0)), "val_token_accuracy": correct / n}

    def samples(self, model, data: TaskData, device, session, step: int) -> list:
        k = session.evaluation.samples
        rows = []
        for ex in data.val.examples[:k]:
            out = greedy(model, ex.prompt_ids, session.evaluation.max_new_tokens, self.eos_id, device)
            rows.append({"step": step, "prompt": ex.prompt, "reference": ex.reference,
                         "output": self.tokenizer.decode(out, skip_special_tokens=True).strip()})
        return rows

    def evaluate_file(self, run, path) -> dict:
        from tuneterm.engine.predict_lm import evaluate_lm_file

        return evaluate_lm_file(run, Path(path))

    def predict_file(self, run, path, *, probs: bool, max_new_tokens, make_progress) -> tuple[list, list]:
        from tuneterm.engine.predict_lm import complete_file

        return complete_file(run, Path(path), max_new_tokens, make_progress)
