"""The training loop: setup → train (steps, edits, evaluation, checkpoints) → end.

Edits land only at optimizer-step boundaries. After ``step`` steps have completed, the
boundary does, in order: apply the recorded edits of that step (replay/resume), apply the
live control messages that are due, then — unless stopping — run step ``step + 1``.
After each step: log, evaluate if due (early stopping), checkpoint if due.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from tuneterm import protocol
from tuneterm.engine import checkpoint as ckpt
from tuneterm.engine import data as D
from tuneterm.engine import dropout as drop
from tuneterm.engine import layers as L
from tuneterm.engine import optim, schedule
from tuneterm.engine.control import Mailbox, RunFiles, truncate_after
from tuneterm.engine.metrics import evaluate
from tuneterm.engine.models import build_model, load_tokenizer
from tuneterm.errors import TrainingError, UserError
from tuneterm.session.schema import Edit, Session

log = logging.getLogger("tuneterm.engine")

WALL_CLOCK_FIELDS = ("time", "samples_per_s", "elapsed")


class Paused(Exception):
    pass


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("--device cuda: CUDA is not available on this machine")
        return torch.device("cuda")
    return torch.device("cpu")


class Trainer:
    def __init__(self, session: Session, run_dir: Path, workspace: Path, *, sinks: list, mailbox: Mailbox | None = None,
                 resume: bool = False, kernels: str | None = None, device: str | None = None) -> None:
        self.session = session  # the frozen session (original knobs + edit log)
        self.run_dir = run_dir
        self.workspace = workspace
        self.extra_sinks = list(sinks)
        self.sinks: list = []
        self.mailbox = mailbox or Mailbox()
        self.resume = resume
        self.kernels_req = kernels or session.runtime.kernels
        self.device_req = device or session.runtime.device
        self.pause_requested = False
        self.checkpoint_requested = False

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        s = self.session
        if s.runtime.threads:
            torch.set_num_threads(s.runtime.threads)
        self.device = resolve_device(self.device_req)
        from tuneterm_kernels.runtime import resolve_impl

        try:
            self.impl = resolve_impl(self.kernels_req, self.device)
        except RuntimeError as e:
            raise UserError(f"--kernels {self.kernels_req}: {e}") from None
        self.dtype = torch.bfloat16 if s.model.dtype == "bfloat16" else torch.float32

        self.tokenizer = load_tokenizer(s.model.source, self.workspace)
        corpus = D.load_corpus(s.data, self.workspace, s.session.seed)
        self.label_names = corpus.label_names
        self.train_set = D.encode(corpus.train, self.tokenizer, corpus.label_names, s.data.max_length)
        self.val_set = D.encode(corpus.val, self.tokenizer, corpus.label_names, s.data.max_length)
        self.pad_id = self.tokenizer.pad_token_id

        model = build_model(s.model.source, len(corpus.label_names), tokenizer=self.tokenizer,
                            workspace=self.workspace, seed=s.session.seed)
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.dctx = drop.DropoutContext(s.session.seed)
        self.sites = drop.install(self.model, self.dctx, s.hyperparameters.dropout, self.impl)
        self.groups = L.layer_groups(self.model)
        names = L.group_names(self.groups)
        unknown = [n for n in s.freeze.layers if n not in names]
        if unknown:
            raise UserError(f"freeze.layers: unknown layer group {unknown[0]!r}; this model has {', '.join(names)}")
        named = [(n, p) for g in self.groups for n, p in g.params]
        self.opt = optim.build(named, s.hyperparameters, impl=self.impl, dtype=self.dtype)

        # The live state (what edits change), initialised from the session.
        self.hp = replace(s.hyperparameters)
        self.patience = s.early_stopping.patience
        self.step = 0
        self.epoch = 0
        self.cursor = 0
        self.samples_seen = 0
        self.edits_applied = 0
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.last_eval_step = -1
        self.last_ckpt_step = -1
        self._set_frozen(s.freeze.layers, True)

        start = None
        if self.resume:
            start = ckpt.latest(self.run_dir / "checkpoints")
            if start is not None:
                self._load(start)
            # Rows a killed attempt wrote after its last checkpoint are redone below.
            truncate_after(self.run_dir / "metrics.jsonl", self.step)
            truncate_after(self.run_dir / "events.jsonl", self.step)
        self.files = RunFiles(self.run_dir)
        self.sinks = [self.files, *self.extra_sinks]
        self._order = D.epoch_order(s.session.seed, self.epoch, len(self.train_set))
        self.total_steps = self._plan_total()
        (self.run_dir / "layers.json").write_text(json.dumps(L.describe(self.groups), indent=1))
        self._event("resume" if start is not None else "start", checkpoint=start.name if start else None,
                    device=str(self.device), kernels=self.impl, train_examples=len(self.train_set),
                    val_examples=len(self.val_set), labels=self.label_names, total_steps=self.total_steps,
                    decayed_params=self.opt.n_decay, non_decayed_params=self.opt.n_no_decay,
                    trainable_params=self.trainable_params())

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ planning
    def _epoch_limit(self, epoch: int) -> int:
        """How many examples of epoch ``epoch`` are trained on (fractional last epoch)."""
        n = len(self.train_set)
        if self.hp.max_steps > 0:
            return n
        if epoch + 1 <= self.hp.epochs:
            return n
        if epoch < self.hp.epochs:
            return max(1, int(round((self.hp.epochs - epoch) * n)))
        return 0

    def _plan_total(self) -> int:
        """Total optimizer steps with the current knobs (recomputed only on edits)."""
        if self.hp.max_steps > 0:
            return self.hp.max_steps
        per = self.hp.batch_size * self.hp.gradient_accumulation
        steps, e, c = self.step, self.epoch, self.cursor
        while True:
            limit = self._epoch_limit(e)
            if limit <= c:
                if limit == 0 or e >= math.ceil(self.hp.epochs):
                    break
                e, c = e + 1, 0
                continue
            steps += math.ceil((limit - c) / per)
            e, c = e + 1, 0
        return steps

    def _done(self) -> bool:
        if self.hp.max_steps > 0:
            return self.step >= self.hp.max_steps
        self._roll_epoch()
        return self.cursor >= self._epoch_limit(self.epoch)

    def _roll_epoch(self) -> bool:
        """Move to the next epoch when this one is used up and training goes on."""
        if self.cursor >= self._epoch_limit(self.epoch) and not self._last_epoch():
            self.epoch += 1
            self.cursor = 0
            self._order = D.epoch_order(self.session.session.seed, self.epoch, len(self.train_set))
            return True
        return False

    # ------------------------------------------------------------------ the loop
    def train(self) -> str:
        """Run to the end; returns the end state (done | early_stopped | stopped | paused)."""
        state, reason = "done", ""
        try:
            while True:
                stop = self._boundary()
                if stop:
                    state, reason = stop
                    break
                if self._done():
                    break
                self._train_step()
                if self._after_step():
                    state, reason = "early_stopped", f"{self.session.early_stopping.metric} did not improve for {self.patience} evaluations"
                    break
        except Paused:
            self._save("pause")
            self._end("paused", "paused on request")
            return "paused"
        except TrainingError as e:
            self._end("failed", str(e))
            raise
        except Exception as e:  # a bug or an OOM: still end the run's files cleanly
            log.exception("training failed")
            self._end("failed", f"{type(e).__name__}: {e}")
            raise TrainingError(f"step {self.step}: {type(e).__name__}: {e}") from e
        if self.last_eval_step != self.step and self.step > 0 and state != "stopped":
            self._evaluate()
        if self.last_ckpt_step != self.step:
            self._save("end")
        self._end(state, reason)
        return state

    def _boundary(self):
        """Apply recorded edits due now, then live control messages. Returns (state, reason) to stop."""
        stop = None
        edits = self.session.edits
        while self.edits_applied < len(edits) and edits[self.edits_applied].step <= self.step:
            e = edits[self.edits_applied]
            if e.step < self.step:
                raise TrainingError(f"edit log: an edit at step {e.step} was not applied before step {self.step}")
            problem = self._check_edit(e)
            if problem:
                raise TrainingError(f"edit log: the edit at step {e.step} cannot apply: {problem}")
            self._apply_edit(e)
            self.edits_applied += 1
            self._event("edit", edit=e.to_dict(), source="log")
            if e.stop:
                stop = ("stopped", "stopped by a recorded stop edit")
        for msg in self.mailbox.drain(self.step):
            result = self._handle_control(msg)
            if result is not None:
                stop = result
        if self.pause_requested:
            raise Paused()
        if self.checkpoint_requested:
            self.checkpoint_requested = False
            self._save("request")
        return stop

    def _handle_control(self, msg: dict):
        mid = msg.get("id")
        t = msg.get("type")
        if t == "_invalid":
            self._reply(protocol.reject(None, msg["reason"]))
            return None
        try:
            protocol.check_control(msg)
        except protocol.ProtocolError as e:
            self._reply(protocol.reject(mid, str(e)))
            self._event("reject", id=mid, reason=str(e))
            return None
        if t == "checkpoint":
            path = self._save("request")
            self._reply(protocol.ack(mid, self.step, checkpoint=path.name))
            return None
        if t == "pause":
            self._reply(protocol.ack(mid, self.step))
            self.pause_requested = True
            return None
        if t == "stop":
            self._record(Edit(step=self.step, stop=True))  # a replay stops at the same step
            self._reply(protocol.ack(mid, self.step))
            return ("stopped", "stopped on request")
        edit = Edit(step=self.step, set=dict(msg.get("values") or {}) if t == "set" else {},
                    freeze=list(msg.get("layers") or []) if t == "freeze" else [],
                    unfreeze=list(msg.get("layers") or []) if t == "unfreeze" else [])
        problem = self._check_edit(edit)
        if problem:
            self._reply(protocol.reject(mid, problem))
            self._event("reject", id=mid, reason=problem, request={k: v for k, v in msg.items() if k != "v"})
            return None
        self._apply_edit(edit)
        self._record(edit)
        self._reply(protocol.ack(mid, self.step, total_steps=self.total_steps, trainable_params=self.trainable_params()))
        return None

    def _record(self, edit: Edit) -> None:
        """Insert a live edit into the log (before any recorded edit still pending) and
        rewrite the run's session.toml atomically."""
        from tuneterm.session.io import save_session

        self.session.edits.insert(self.edits_applied, edit)
        self.edits_applied += 1
        save_session(self.session, self.run_dir / "session.toml")
        self._event("edit", edit=edit.to_dict(), source="live")

    def _check_edit(self, e: Edit) -> str | None:
        """Why the edit cannot apply now (None: it can). Values are checked against the
        schema and, as a whole, against the knobs as currently edited."""
        from tuneterm.session.io import check_set_values

        if e.set:
            current = self.session.copy()
            current.hyperparameters = replace(self.hp)
            current.early_stopping.patience = self.patience
            problems = check_set_values(e.set, current)
            if problems:
                return problems[0]
        names = L.group_names(self.groups)
        for n in [*e.freeze, *e.unfreeze]:
            if n not in names:
                return f"unknown layer group {n!r}; this model has {', '.join(names)}"
        if e.freeze:
            frozen = set(L.frozen_names(self.groups)) | set(e.freeze)
            if all(n in frozen for n in names):
                return "freezing every layer group would leave nothing to train"
        return None

    def _apply_edit(self, e: Edit) -> None:
        replan = False
        for k, v in e.set.items():
            if k == "patience":
                self.patience = int(v)
                continue
            field_type = type(getattr(self.hp, k))
            setattr(self.hp, k, field_type(v))
            if k == "dropout":
                drop.set_p(self.model, self.sites, float(v))
            if k in ("batch_size", "epochs", "max_steps"):
                replan = True
        if e.freeze:
            self._set_frozen(e.freeze, True)
        if e.unfreeze:
            self._set_frozen(e.unfreeze, False)
        if replan:
            self.total_steps = self._plan_total()

    def _set_frozen(self, names, frozen: bool) -> None:
        changed = L.set_frozen(self.groups, names, frozen)
        if changed:
            self.opt.set_frozen(changed, frozen)

    def _next_indices(self) -> list:
        """The next micro-batch: up to batch_size examples from the cursor, never across
        the end of an epoch (or of the fractional last epoch)."""
        limit = self._epoch_limit(self.epoch)
        if self.cursor >= limit:
            return []
        end = min(limit, self.cursor + self.hp.batch_size)
        idx = self._order[self.cursor:end]
        self.cursor = end
        return idx

    def _train_step(self) -> None:
        t0 = time.perf_counter()
        self.model.train()
        micro = []
        for m in range(self.hp.gradient_accumulation):
            idx = self._next_indices()
            if len(idx) == 0:
                break
            micro.append(idx)
        n_total = sum(len(i) for i in micro)
        loss_sum = torch.zeros((), dtype=torch.float64)
        for m, idx in enumerate(micro):
            self.dctx.at(self.step, m)
            batch = D.collate(self.train_set, idx, self.pad_id, self.device)
            out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            loss = torch.nn.functional.cross_entropy(out.logits.float(), batch["labels"])
            (loss * (len(idx) / n_total)).backward()
            loss_sum += loss.detach().double().cpu() * len(idx)
        loss_value = float(loss_sum / n_total)
        gnorm = self.opt.grad_norm()
        gnorm_value = float(gnorm)
        lr = schedule.learning_rate(self.step, self.hp, self.total_steps)
        finite = math.isfinite(loss_value) and math.isfinite(gnorm_value)
        if finite:
            clip = self.hp.grad_clip
            scale = min(1.0, clip / (gnorm_value + 1e-6)) if clip > 0 else 1.0
            self.opt.step(lr, self.hp.weight_decay, scale)
        self.opt.zero_grad()
        self.step += 1
        self.samples_seen += n_total
        self._epoch_ended = self.cursor >= self._epoch_limit(self.epoch)
        self._roll_epoch()
        dt = time.perf_counter() - t0
        row = {"kind": "train", "step": self.step, "epoch": round(self._epoch_progress(), 6),
               "loss": loss_value if finite else None, "lr": lr, "grad_norm": gnorm_value if finite else None,
               "batch_size": self.hp.batch_size, "total_steps": self.total_steps,
               "samples_per_s": round(n_total / dt, 2) if dt > 0 else None, "time": round(time.time(), 3)}
        if not finite:
            row["nonfinite"] = True
        self._metric(row)
        if not finite:
            what = f"non-finite loss ({loss_value})" if not math.isfinite(loss_value) else \
                f"non-finite gradient norm ({gnorm_value})"
            if self.session.runtime.nonfinite == "stop":
                self._event("error", message=f"{what} at step {self.step}")
                raise TrainingError(f"{what} at step {self.step}; the last good checkpoint is kept")
            self._event("skip", message=f"{what} at step {self.step}: update skipped")

    def _last_epoch(self) -> bool:
        return self.hp.max_steps == 0 and self.epoch + 1 >= math.ceil(self.hp.epochs)

    def _epoch_progress(self) -> float:
        n = len(self.train_set)
        return self.epoch + self.cursor / n

    def _after_step(self) -> bool:
        """Evaluate/checkpoint when due; True when early stopping says stop."""
        ev = self.session.evaluation
        due = self.step % ev.interval_steps == 0 if ev.interval_steps > 0 else self._epoch_ended
        stop = self._evaluate() if due else False
        ci = self.session.checkpoint.interval_steps
        if ci > 0 and self.step % ci == 0 and self.last_ckpt_step != self.step:
            self._save("interval")
        return stop

    def _evaluate(self) -> bool:
        ev = self.session.evaluation
        bs = ev.batch_size or self.hp.batch_size * 2
        res = evaluate(self.model, self.val_set, self.pad_id, self.device, bs, len(self.label_names))
        self.last_eval_step = self.step
        row = {"kind": "eval", "step": self.step, "epoch": round(self._epoch_progress(), 6)}
        if "loss" in ev.metrics:
            row["val_loss"] = res["loss"]
        if "accuracy" in ev.metrics:
            row["val_accuracy"] = res["accuracy"]
        if "f1" in ev.metrics:
            row["val_f1"] = res["f1"]
        row["time"] = round(time.time(), 3)
        self._metric(row)
        es = self.session.early_stopping
        value = {"val_loss": res["loss"], "val_accuracy": res["accuracy"], "val_f1": res["f1"]}[es.metric]
        mode = es.mode or ("min" if es.metric == "val_loss" else "max")
        improved = self.best is None or (value < self.best - es.min_delta if mode == "min"
                                         else value > self.best + es.min_delta)
        if improved:
            self.best, self.best_step, self.bad_evals = value, self.step, 0
            self._event("eval_best", metric=es.metric, value=value)
            if self.session.checkpoint.keep_best:
                self._save("best")
        else:
            self.bad_evals += 1
        if es.enabled and self.bad_evals >= self.patience:
            self._event("early_stop", metric=es.metric, best=self.best, best_step=self.best_step,
                        patience=self.patience)
            return True
        return False

    # ------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {
            "step": self.step, "epoch": self.epoch, "cursor": self.cursor, "samples_seen": self.samples_seen,
            "total_steps": self.total_steps, "edits_applied": self.edits_applied,
            "hyperparameters": asdict(self.hp), "patience": self.patience,
            "frozen": L.frozen_names(self.groups),
            "early_stopping": {"best": self.best, "best_step": self.best_step, "bad_evals": self.bad_evals,
                               "last_eval_step": self.last_eval_step},
            "kernels": self.impl, "dtype": str(self.dtype).replace("torch.", ""),
        }

    def _save(self, reason: str) -> Path:
        tensors, meta = self.opt.state_tensors()
        state = self._state()
        state["optimizer"] = meta
        path = ckpt.save(self.run_dir / "checkpoints", self.step, self.model, tensors, state)
        self.last_ckpt_step = self.step
        keep = {self.best_step} if (self.best_step is not None and self.session.checkpoint.keep_best) else set()
        ckpt.prune(self.run_dir / "checkpoints", self.session.checkpoint.keep_last, keep)
        self.files.sync()
        self._event("checkpoint", path=f"checkpoints/{path.name}", reason=reason)
        return path

    def _load(self, path: Path) -> None:
        tensors, st = ckpt.load(path, self.model, self.device)
        self.step, self.epoch, self.cursor = st["step"], st["epoch"], st["cursor"]
        self.samples_seen, self.edits_applied = st["samples_seen"], st["edits_applied"]
        self.hp = type(self.hp)(**st["hyperparameters"])
        self.patience = st["patience"]
        drop.set_p(self.model, self.sites, self.hp.dropout)
        all_names = L.group_names(self.groups)
        self._set_frozen(all_names, False)
        self._set_frozen(st["frozen"], True)
        es = st["early_stopping"]
        self.best, self.best_step, self.bad_evals = es["best"], es["best_step"], es["bad_evals"]
        self.last_eval_step = es.get("last_eval_step", -1)
        self.last_ckpt_step = self.step
        self.opt.load_state(tensors, st["optimizer"])

    # ------------------------------------------------------------------ output
    def _metric(self, row: dict) -> None:
        for s in self.sinks:
            s.metric(row)

    def _event(self, kind: str, **fields) -> None:
        row = {"kind": kind, "step": self.step, **fields, "time": round(time.time(), 3)}
        for s in self.sinks:
            s.event(row)

    def _reply(self, msg: dict) -> None:
        for s in self.sinks:
            s.reply(msg)

    def _end(self, state: str, reason: str) -> None:
        self._event("end", state=state, reason=reason, best=self.best, best_step=self.best_step)
        self.files.sync()

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def summary(run_dir: Path) -> dict:
    """The end of a run, for the CLI: steps, last loss, best validation metric."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    out = {"run_dir": str(run_dir), "steps": train[-1]["step"] if train else 0,
           "last_loss": train[-1]["loss"] if train else None}
    if evals:
        last = evals[-1]
        out.update({k: last[k] for k in ("val_loss", "val_accuracy", "val_f1") if k in last})
        if any("val_accuracy" in e for e in evals):
            out["best_val_accuracy"] = max(e.get("val_accuracy", float("-inf")) for e in evals)
    return out

