"""Preference tuning (DPO and its family): a causal LM learns to give the chosen completion
of each pair more probability than the rejected one, relative to a reference model.

Data, tokenisation and batches: pref_data.py (TRL's formats and tokenisation; a pair's
prompt goes through the model once, its two completions each see it). The loss of a batch
is the mean over its pairs of the preference loss (pref_loss.py) plus ``sft_weight`` times
the chosen completion's mean token NLL, so ``batch_weight`` is the number of pairs. Only
the hidden states at completion positions go through the LM head (as in the causal-LM
task: a logit scale or soft cap the model applies is applied there too). The reference
log-probs: pref_reference.py. ``beta`` and ``sft_weight`` are live knobs (``self.knobs``).

Metrics of each training step and evaluation (``val_`` prefixed there, beside ``val_loss``):
reward_accuracy (the share of pairs whose chosen reward is above the rejected one's),
reward_margin, reward_chosen, reward_rejected (means over pairs), logps_chosen,
logps_rejected (the policy's summed log-probs, means over pairs).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from tuneterm.engine import logit_head
from tuneterm.engine import pref_data as PD
from tuneterm.engine import pref_loss as PL
from tuneterm.engine import pref_reference as REF
from tuneterm.engine.tasks.base import TaskData
from tuneterm.engine.tasks.causal_lm import CausalLMTask, encode_splits, headline_records, split_records
from tuneterm.errors import UserError
from tuneterm.session.tasks import PREFERENCE_TRAIN, TASK_TABLE

SPEC = TASK_TABLE["preference"]
STATS = ("loss", *PREFERENCE_TRAIN)


def headline_pairs() -> list:
    """builtin:bbc-news as pairs: each article's lead paragraph asks for a headline; its own
    title is chosen, another article's title (a fixed draw) is rejected."""
    convs = headline_records()
    titles = [r.messages[1]["content"] for r in convs]
    draw = np.random.default_rng(0xBBC).integers(1, len(convs), size=len(convs))
    out = []
    for i, rec in enumerate(convs):
        j = (i + int(draw[i])) % len(convs)
        while titles[j] == titles[i]:
            j = (j + 1) % len(convs)
        out.append(PD.PairRecord(rec.where, True, rec.messages[:1], rec.messages[1:],
                                 [{"role": "assistant", "content": titles[j]}]))
    return out


def _builtin(source: str) -> list:
    if source == "builtin:bbc-news":
        return headline_pairs()
    raise UserError(f"data.source: {source} has no preference pairs; use builtin:bbc-news or a file of pairs")


class PreferenceTask(CausalLMTask):
    name = "preference"
    metrics = tuple(SPEC.metrics)

    def __init__(self) -> None:
        super().__init__()
        self.settings = None  # [preference] as the session gives it (loss, label_smoothing, ...)
        self.reference = "none"  # pref_reference.kind
        self.frozen: torch.nn.Module | None = None  # the frozen copy (reference "auto", no LoRA)
        self.max_length = 0
        self.seed, self.micro_batch = 0, 1  # the first epoch's order and micro-batches (precompute)
        self._stats = np.zeros(len(STATS))
        self._pairs = 0
        self.strategy = None  # env.strategy: a step's sums are the ranks' together

    def mode(self, metric: str) -> str:
        return SPEC.metrics[metric]

    # -- data and models ----------------------------------------------------------------------
    def load_data(self, session, workspace, tokenizer) -> TaskData:
        from tuneterm.engine import lm_data as LM

        spec = session.data
        LM.prepare_tokenizer(tokenizer)
        self.tokenizer, self.eos_id = tokenizer, tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.settings, self.max_length = session.preference, spec.max_length
        self.seed, self.micro_batch = session.session.seed, session.hyperparameters.batch_size
        self.knobs = {k: getattr(session.preference, k) for k in SPEC.live_knobs}
        self.want_ckpt = session.runtime.gradient_checkpointing
        train_r, val_r, _ = split_records(spec, workspace, session.session.seed, read=PD.records_from,
                                          builtin=_builtin)
        train_r = train_r[: spec.max_samples] if spec.max_samples else train_r
        val_r = val_r[: spec.max_eval_samples] if spec.max_eval_samples else val_r
        train, val, t_info, v_info, lost = encode_splits(
            train_r, val_r, lambda rs: PD.encode_all(rs, tokenizer, spec.max_length), PD.left_out, spec.max_length,
            "pair leaves room for a completion")
        info = {"train_examples": len(train), "val_examples": len(val),
                "format": "conversational" if train_r[0].chat else "standard",
                "loss": session.preference.loss, "long_prompts": t_info["long_prompts"] + v_info["long_prompts"],
                "truncated": t_info["truncated"] + v_info["truncated"]}
        return TaskData(PD.Pairs(train), PD.Pairs(val), info,
                        warnings=[f"{what} data: {line}" for what, line in lost.items() if line])

    def bind(self, model, env) -> None:
        self.strategy = env.strategy
        self.reference = REF.kind(self.settings, env.lora)
        if self.reference == "frozen-copy":
            self.frozen = REF.frozen_copy(model, env.acc)

    def prepare(self, model, data: TaskData, env) -> None:
        data.info["reference"] = self.reference
        if self.reference != "precompute":
            return
        from tuneterm.engine import accel
        from tuneterm.engine.data import epoch_order

        def compute(split):
            # The training pairs in the first epoch's micro-batches, the validation pairs in the
            # evaluation's: the same batches as the steps that use them, so the same rounding —
            # at step 1 the policy ties its reference exactly, as when it is computed each step.
            order = epoch_order(self.seed, 0, len(split)) if split is data.train else range(len(split))
            size = self.micro_batch if split is data.train else env.eval_batch_size
            with REF.forward(model, adapters_off=env.lora), accel.autocast(env.acc):
                return self._logps_of(model, split, env.device, size, order)

        name, how = REF.load_or_compute(model, data, env, self.max_length, compute)
        data.info.update(reference_file=name, reference_cache=how)

    # -- a batch ------------------------------------------------------------------------------
    def collate(self, dataset, indices, device) -> dict:
        return PD.collate(dataset, indices, self.pad_id, device)

    def batch_weight(self, batch: dict) -> int:
        return int(batch["input_ids"].shape[0])

    def logps(self, model, batch: dict) -> PL.Logps:
        """The model's summed log-probs of each pair's chosen and rejected completion."""
        hidden, head = self._hidden_and_head(model, batch)
        b, width = batch["input_ids"].shape
        side = batch["target_side"]
        scored = side >= 0
        row = torch.arange(b, device=side.device)[:, None]
        h = hidden.reshape(-1, hidden.shape[-1])[(row * width + batch["target_at"])[scored]]
        logits = logit_head.apply(head(h).float(), *logit_head.transform(model))
        targets = batch["target_ids"][scored]
        tok = logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)
        # pair j's chosen sums into j, its rejected into b + j
        sums = torch.zeros(2 * b, dtype=tok.dtype, device=tok.device).index_add(0, (side * b + row)[scored], tok)
        n = batch["n_tokens"]
        return PL.Logps(sums[:b], sums[b:], n[:, 0], n[:, 1])

    def ref_logps(self, model, batch: dict) -> tuple:
        """(chosen, rejected) of the reference model, or (None, None) without one."""
        if "ref_chosen" in batch:
            return batch["ref_chosen"], batch["ref_rejected"]
        if self.reference in ("none", "precompute"):  # precompute: attached to every split by prepare
            return None, None
        ref = self.frozen if self.frozen is not None else model
        with REF.forward(ref, adapters_off=self.reference == "adapters-off"):
            lp = self.logps(ref, batch)
        return lp.chosen, lp.rejected

    def pair_terms(self, model, batch: dict) -> tuple:
        """(loss per pair, policy Logps, reward chosen, reward rejected) with the knobs as edited."""
        lp = self.logps(model, batch)
        ref_c, ref_r = self.ref_logps(model, batch)
        s = self.settings
        loss, r_c, r_r = PL.pair_losses(s.loss, lp, ref_c, ref_r, beta=self.knobs["beta"],
                                        label_smoothing=s.label_smoothing, simpo_gamma=s.simpo_gamma)
        w = PL.sft_weight_of(s.loss, self.knobs["sft_weight"])
        if w:
            loss = loss + w * PL.sft_loss(lp)
        return loss, lp, r_c, r_r

    def _count(self, loss, lp, r_c, r_r) -> None:
        vals = torch.stack([loss.detach(), (r_c > r_r).float(), r_c - r_r, r_c, r_r, lp.chosen.detach(),
                            lp.rejected.detach()]).double().sum(dim=1)
        self._stats += vals.cpu().numpy()
        self._pairs += loss.shape[0]

    def _take(self, across_ranks: bool = False) -> dict:
        stats, pairs = self._stats.tolist(), self._pairs
        if across_ranks and self.strategy is not None and self.strategy.world > 1:
            # one collective, on every rank (one with no rows sends zeros): the global batch's means
            *stats, pairs = self.strategy.all_sum([*stats, float(pairs)])
        self._stats[:], self._pairs = 0.0, 0
        return {k: float(v / pairs) for k, v in zip(STATS, stats)} if pairs else {}

    def loss(self, model, batch: dict) -> torch.Tensor:
        loss, lp, r_c, r_r = self.pair_terms(model, batch)
        self._count(loss, lp, r_c, r_r)
        return loss.mean()

    def step_metrics(self) -> dict:
        # Every rank calls this at the same point (the trainer's row after a step): one sum
        # over the ranks a step. Evaluation needs none: every rank evaluates the whole
        # validation set.
        out = self._take(across_ranks=True)
        out.pop("loss", None)  # the trainer's own
        return out

    def forget_step_metrics(self) -> None:
        self._take()

    @contextlib.contextmanager
    def uncounted(self):
        stats, pairs = self._stats.copy(), self._pairs
        try:
            yield
        finally:
            self._stats[:], self._pairs = stats, pairs

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, data: TaskData, device, batch_size: int) -> dict:
        was = model.training
        model.eval()
        self._take()
        try:
            for a in range(0, len(data.val), batch_size):
                batch = self.collate(data.val, range(a, min(a + batch_size, len(data.val))), device)
                self._count(*self.pair_terms(model, batch))
        finally:
            model.train(was)
        return {f"val_{k}": v for k, v in self._take().items()}

    @torch.no_grad()
    def _logps_of(self, model, split, device, batch_size: int, order) -> tuple:
        """(chosen, rejected) log-probs of every pair of ``split``, computed in batches of
        ``batch_size`` pairs taken in ``order``, returned in the split's own order."""
        chosen, rejected = torch.zeros(len(split)), torch.zeros(len(split))
        order = [int(i) for i in order]
        for a in range(0, len(order), batch_size):
            idx = order[a:a + batch_size]
            lp = self.logps(model, self.collate(split, idx, device))
            chosen[idx], rejected[idx] = lp.chosen.float().cpu(), lp.rejected.float().cpu()
        return chosen, rejected

    def samples(self, model, data: TaskData, device, session, step: int) -> list:
        from tuneterm.engine.generate import greedy

        k = min(session.evaluation.samples, len(data.val))
        if not k:
            return []
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                lp = self.logps(model, self.collate(data.val, range(k), device))
        finally:
            model.train(was)
        rows = []
        for i, p in enumerate(data.val.pairs[:k]):
            out = greedy(model, p.prompt_ids, session.evaluation.max_new_tokens, self.eos_id, device)
            rows.append({"step": step, "prompt": p.prompt, "reference": p.chosen, "rejected": p.rejected,
                         "output": self.tokenizer.decode(out, skip_special_tokens=True).strip(),
                         "logps_chosen": float(lp.chosen[i]), "logps_rejected": float(lp.rejected[i])})
        return rows

    # -- results ------------------------------------------------------------------------------
    def evaluate_file(self, run, path) -> dict:
        from tuneterm.engine.pref_results import evaluate_pairs_file

        return evaluate_pairs_file(self, run, Path(path))

    def predict_file(self, run, path, *, probs: bool, max_new_tokens, make_progress) -> tuple[list, list]:
        from tuneterm.engine.pref_results import complete_pairs_file

        return complete_pairs_file(run, Path(path), max_new_tokens, make_progress)

