"""The Trainer, in phases: setup → train → (save_checkpoint / load_checkpoint) → cleanup.

It owns the loop and nothing that differs between kinds of fine-tuning: the task
(tuneterm.engine.tasks) loads the data, builds the model, computes the loss of a batch
and evaluates. The plan (plan.py) says which units a step trains on; edits.py turns
control messages into checked edits; state.py is what a checkpoint holds.

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
from dataclasses import replace
from pathlib import Path

import torch

from tuneterm.engine import accel
from tuneterm.engine import data as D
from tuneterm.engine import dropout as drop
from tuneterm.engine import edits as E
from tuneterm.engine import layers as L
from tuneterm.engine import grad_ckpt, heartbeat, micro, oom, optim, plan, resume, schedule
from tuneterm.engine import strategy as S
from tuneterm.engine.control import Mailbox, Sink
from tuneterm.engine.early_stop import EarlyStopping
from tuneterm.engine.logbook import describe_eval
from tuneterm.engine.models import load_tokenizer
from tuneterm.engine.outputs import NoOutputs, Outputs
from tuneterm.engine.state import TrainState
from tuneterm.engine.tasks import get_task
from tuneterm.engine.tasks.base import TaskEnv
from tuneterm.engine.weights import ModelWeights, lora_module
from tuneterm.errors import TrainingError, UserError
from tuneterm.rundir import RunDir
from tuneterm.session.schema import Session
from tuneterm.states import RunEnd
from tuneterm.tracking import live_sink

log = logging.getLogger("tuneterm.engine")


class Paused(Exception):
    pass


class Trainer:
    def __init__(self, session: Session, run_dir: Path, workspace: Path, *, sinks: list[Sink],
                 mailbox: Mailbox | None = None, resume: bool = False, kernels: str | None = None,
                 device: str | None = None, replay_of: Path | None = None, tracking: bool = True,
                 strategy: S.Single | None = None) -> None:
        self.session = session  # the frozen session (original knobs + edit log)
        self.run_dir = run_dir
        self.paths = RunDir(run_dir)
        self.workspace = workspace
        self.extra_sinks = list(sinks)
        self.tracking = tracking  # [tracking]'s trackers (not for validate's throwaway runs)
        self.out: Outputs | None = None  # made in setup
        self.mailbox = mailbox or Mailbox()
        self.resume = resume
        self.replay_of = replay_of  # the run a replay retrains: a LoRA replay needs its base model
        self.kernels_req = kernels or session.runtime.kernels
        self.device_req = device or session.runtime.device
        self.strategy = strategy  # one process or many (strategy.py); chosen in setup when None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Build everything a run needs (device, task data, model, optimizer, state); on
        resume load the newest checkpoint. ``__init__`` keeps what the caller chose (session,
        run directory, sinks, mailbox, requested kernels and device); the rest of a trainer's
        attributes are made here."""
        s = self.session
        if s.runtime.threads:
            torch.set_num_threads(s.runtime.threads)
        self.device = accel.resolve_device(self.device_req)
        if self.strategy is None:
            self.strategy = S.for_session(s, self.device)
        lead = self.strategy.is_leader  # rank 0 alone writes the run directory's files
        # Kernels, precision, compile and determinism are chosen in one place (accel); before
        # the model reaches the GPU, as the cuBLAS workspace setting must precede its init.
        self.acc = accel.setup(s, self.device, self.kernels_req)
        self.impl, self.dtype = self.acc.impl, self.acc.param_dtype

        self.task = get_task(s)
        self.task.impl = self.impl
        es = s.early_stopping
        if es.metric not in self.task.metrics:
            raise UserError(f"early_stopping.metric: {es.metric} is not a {self.task.name} metric; "
                            f"one of {', '.join(self.task.metrics)}")
        self.tokenizer = load_tokenizer(s.model.source, self.workspace)
        self.data = self.task.load_data(s, self.workspace, self.tokenizer)
        model = self.task.build_model(s, self.workspace, self.tokenizer, self.data)
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.env = TaskEnv(self.device, self.dtype, self.acc, self.run_dir, self.workspace,
                           s.evaluation.batch_size or 2 * s.hyperparameters.batch_size, s.lora.enabled, self.replay_of,
                           strategy=self.strategy)
        self.task.bind(self.model, self.env)  # a second model (preference's reference) follows these choices
        self.dctx = drop.DropoutContext(s.session.seed)
        self.sites = drop.install(self.model, self.dctx, s.hyperparameters.dropout, self.impl)
        self.lora = lora_module(s)  # LoRA: adapters attached after the base model's dropout sites
        if self.lora is not None:
            self.model = self.lora.attach(self.model, s, self.dctx, self.impl)
        # Of the whole base weights, before FSDP shards them (resume checks it against the run's).
        fingerprint = self.lora.fingerprint(self.model) if self.lora is not None else None
        if self.strategy.name == "fsdp":  # sharded per block before anything holds a parameter
            self.strategy.check(self.acc, s, self.lora)
            self.model = self.strategy.wrap(self.model)
        self.groups = L.layer_groups(self.model)
        self.weights = ModelWeights(self.model, self.groups, self.lora)
        names = L.group_names(self.groups)
        unknown = [n for n in s.freeze.layers if n not in names]
        if unknown:
            raise UserError(f"freeze.layers: unknown layer group {unknown[0]!r}; this model has {', '.join(names)}")
        named = [(n, p) for g in self.groups for n, p in g.params]  # with LoRA: the adapters (and trained bases)
        lr_scale = self.lora.lr_scale(self.groups, s.lora.lr_ratio) if self.lora else None
        self.opt = optim.build(named, s.hyperparameters, impl=self.impl, dtype=self.dtype, lr_scale=lr_scale)
        if self.lora is not None:  # base blocks trained beside the adapters from the start (names checked)
            self.lora.apply_edit(self, "train_base", s.lora.train_base)
        if s.runtime.gradient_checkpointing:  # recomputation redraws the same dropout masks
            grad_ckpt.enable(self.model, self.dctx)
        self.model = accel.maybe_compile(self.model, self.acc)  # after every module swap; in place
        self.desk = E.EditDesk(self)

        # The live state (what edits change), initialised from the session.
        self.state = TrainState(
            step=0, epoch=0, cursor=0, samples_seen=0, total_steps=0, edits_applied=0,
            hyperparameters=replace(s.hyperparameters), frozen=[],
            early_stopping=EarlyStopping.of(es, self.task.mode(es.metric)), last_eval_step=-1,
            kernels=self.impl, dtype=str(self.dtype).replace("torch.", ""),
            lora={k: getattr(s.lora, k) for k in ("dropout", "lr_ratio", "train_base")} if self.lora else {},
            lora_fingerprint=fingerprint,
            task_knobs=dict(self.task.knobs))
        self.last_ckpt_step = -1
        self.pause_requested = False
        self.fault = oom.FaultInjector()
        self.checkpoint_requested = False
        self.set_frozen(s.freeze.layers, True)

        # On the untrained model (a resume loads weights next); under FSDP in the root's forward.
        self.strategy.run(self.model, self.task.prepare, self.data, self.env)
        start, skipped = resume.starting_point(self)  # the newest checkpoint that verifies and loads
        trackers = live_sink(s, self.run_dir, self.workspace, resumed=self.resume) if self.tracking and lead else None
        self.out = (Outputs(self.run_dir, self.extra_sinks + ([trackers] if trackers else []), lambda: self.state.step)
                    if lead else NoOutputs())
        self.metric, self.event, self.reply = self.out.metric, self.out.event, self.out.reply
        resume.set_aside(self, skipped if lead else [])
        self._orders: dict = {}
        self.replan()
        if lead:
            self.paths.layers.write_text(json.dumps(L.describe(self.groups), indent=1))
        self.event("resume" if start is not None else "start", checkpoint=start.name if start else None,
                   model=s.model.source, task=self.task.name, device=str(self.device), kernels=self.impl,
                   **self.data.info, total_steps=self.state.total_steps, decayed_params=self.opt.n_decay,
                   non_decayed_params=self.opt.n_no_decay, trainable_params=self.trainable_params())
        for line in self.data.warnings:  # on the terminal and in log.txt, not only in the start event
            self.event("warning", message=line)

    @property
    def hp(self):
        """The hyperparameters as currently edited."""
        return self.state.hyperparameters

    def knobs(self) -> plan.Knobs:
        return plan.Knobs.of(self.hp, len(self.data.train))

    def replan(self) -> None:
        self.state.total_steps = plan.total_steps(self.knobs(), self.state.position)

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def set_frozen(self, names, frozen: bool) -> None:
        changed = L.set_frozen(self.groups, names, frozen)
        if changed:
            self.opt.set_frozen(changed, frozen)
        self.state.frozen = L.frozen_names(self.groups)

    def lora_edit(self, name: str, value) -> None:
        """A live edit of a LoRA knob (lora_dropout, lora_lr_ratio, train_base): lora.apply_edit's."""
        if self.lora is None or not hasattr(self.lora, "apply_edit"):
            raise TrainingError(f"lora.{name}: this run trains no LoRA adapters")
        self.lora.apply_edit(self, name, value)

    def order(self, epoch: int):
        if epoch not in self._orders:
            self._orders = {epoch: D.epoch_order(self.session.session.seed, epoch, len(self.data.train))}
        return self._orders[epoch]

    # ------------------------------------------------------------------ the loop
    def train(self) -> RunEnd:
        """Run to the end; returns how it ended (done | early_stopped | stopped | paused)."""
        state, reason = RunEnd.DONE, ""
        try:
            while True:
                stop = self.boundary()
                if stop:
                    state, reason = stop
                    break
                # An edit (of epochs) may have made more of the data due: roll explicitly.
                self.state.move_to(plan.rolled(self.knobs(), self.state.position))
                if plan.done(self.knobs(), self.state.position):
                    break
                if self.after_step(self.train_step()):
                    es = self.state.early_stopping
                    state, reason = RunEnd.EARLY_STOPPED, f"{es.metric} did not improve for {es.patience} evaluations"
                    break
        except Paused:
            self.save_checkpoint("pause")
            self._end(RunEnd.PAUSED, "paused on request")
            return RunEnd.PAUSED
        except TrainingError as e:
            self._end(RunEnd.FAILED, str(e))
            raise
        except Exception as e:  # a bug or an OOM: still end the run's files cleanly
            log.exception("training failed")
            self._end(RunEnd.FAILED, f"{type(e).__name__}: {e}")
            raise TrainingError(f"step {self.state.step}: {type(e).__name__}: {e}") from e
        if self.state.last_eval_step != self.state.step and self.state.step > 0 and state != RunEnd.STOPPED:
            self.evaluate()
        if self.last_ckpt_step != self.state.step:
            self.save_checkpoint("end")
        self._end(state, reason)
        return state

    def boundary(self):
        """Apply recorded edits due now, then live control messages. Returns (state, reason)
        to stop, else None; raises Paused on a pause request."""
        stop = None
        for e in self.desk.due():
            self.desk.check_recorded(e)
            self.desk.apply(e)
            self.state.edits_applied += 1
            self.event("edit", edit=e.to_dict(), source="log")
            if e.stop:
                stop = (RunEnd.STOPPED, "stopped by a recorded stop edit")
        # Rank 0's messages on every rank (one collective per boundary, empty when none):
        # every rank applies the same checked edit at the same step.
        drained = self.mailbox.drain(self.state.step) if self.strategy.is_leader else None
        for msg in self.strategy.broadcast(drained) if self.strategy.world > 1 else drained:
            result = self.desk.handle(msg)
            if result is not None:
                stop = result
        if self.pause_requested:
            raise Paused()
        if self.checkpoint_requested:
            self.checkpoint_requested = False
            self.save_checkpoint("request")
        return stop

    def train_step(self) -> plan.StepPlan:
        """One optimizer step over the plan's next micro-batches; returns that plan. Out of
        memory halves the micro-batch (an edit, see oom.py) and redoes the step."""
        t0 = time.perf_counter()
        st = self.state
        while True:
            step_plan = plan.next_step(self.knobs(), st.position)
            try:
                loss_value = self._forward_backward(step_plan)
                break
            except oom.OutOfMemory as e:
                message = str(e).splitlines()[0] if str(e) else "out of memory"
            oom.halve_micro_batch(self, message)
        gnorm_value = self.strategy.grad_norm(self.opt)
        lr = schedule.learning_rate(st.step, self.hp, st.total_steps)
        finite = math.isfinite(loss_value) and math.isfinite(gnorm_value)
        if finite:
            clip = self.hp.grad_clip
            scale = min(1.0, clip / (gnorm_value + 1e-6)) if clip > 0 else 1.0
            self.opt.step(lr, self.hp.weight_decay, scale)
        self.opt.zero_grad()
        st.move_to(step_plan.after)
        st.samples_seen += step_plan.units
        dt = time.perf_counter() - t0
        heartbeat.beat(self, dt)  # out of band: a stalled rank cannot report through a collective
        row = {"kind": "train", "step": st.step, "epoch": round(plan.progress(self.knobs(), st.position), 6),
               "loss": loss_value if finite else None, "lr": lr, "grad_norm": gnorm_value if finite else None,
               "batch_size": self.hp.batch_size, "total_steps": st.total_steps,
               "samples_per_s": round(step_plan.units / dt, 2) if dt > 0 else None, "time": round(time.time(), 3)}
        row.update(self.task.step_metrics())  # the task's own values (preference: rewards, log-probs)
        if not finite:
            row["nonfinite"] = True
        self.metric(row)
        if not finite:
            what = f"non-finite loss ({loss_value})" if not math.isfinite(loss_value) else \
                f"non-finite gradient norm ({gnorm_value})"
            if self.session.runtime.nonfinite == "stop":
                self.event("error", message=f"{what} at step {st.step}")
                raise TrainingError(f"{what} at step {st.step}; the last good checkpoint is kept")
            self.event("skip", message=f"{what} at step {st.step}: update skipped")
        return step_plan

    def _forward_backward(self, step_plan: plan.StepPlan) -> float:
        """Gradients of the step's micro-batches (split across ranks: micro.py); returns
        the step's mean loss."""
        return micro.forward_backward(self, step_plan)

    def after_step(self, step_plan: plan.StepPlan) -> bool:
        """Evaluate/checkpoint when due; True when early stopping says stop."""
        ev, step = self.session.evaluation, self.state.step
        due = step % ev.interval_steps == 0 if ev.interval_steps > 0 else step_plan.epoch_ended
        stop = self.evaluate() if due else False
        ci = self.session.checkpoint.interval_steps
        if ci > 0 and step % ci == 0 and self.last_ckpt_step != step:
            self.save_checkpoint("interval")
        return stop

    def evaluate(self) -> bool:
        """Evaluate on the validation set (metrics row, samples); True when early stopping says stop."""
        from tuneterm.session.check import metric_problem

        s, st = self.session, self.state
        bs = s.evaluation.batch_size or self.hp.batch_size * 2
        with accel.autocast(self.acc):
            res = self.strategy.run(self.model, self.task.evaluate, self.data, self.device, bs)
        st.last_eval_step = st.step
        row = {"kind": "eval", "step": st.step, "epoch": round(plan.progress(self.knobs(), st.position), 6)}
        row.update({k: res[k] for k in self.task.metrics if k in res and metric_problem(s, k) is None})
        row["time"] = round(time.time(), 3)
        self.metric(row)
        log.info(describe_eval(row))
        self.out.samples(self.strategy.run(self.model, self.task.samples, self.data, self.device, s, st.step))
        es = st.early_stopping
        if es.update(res[es.metric], st.step):
            self.event("eval_best", metric=es.metric, value=es.best)
            if s.checkpoint.keep_best:
                self.save_checkpoint("best")
        if es.should_stop:
            self.event("early_stop", metric=es.metric, best=es.best, best_step=es.best_step, patience=es.patience)
            return True
        return False

    # ------------------------------------------------------------------ checkpoints (resume.py)
    def save_checkpoint(self, reason: str) -> Path:
        return resume.save(self, reason)

    def load_checkpoint(self, path: Path) -> None:
        resume.load(self, path)

    # ------------------------------------------------------------------ end
    def _end(self, state: RunEnd, reason: str) -> None:
        es = self.state.early_stopping
        self.event("end", state=state, reason=reason, best=es.best, best_step=es.best_step,
                   total_steps=self.state.total_steps)
        self.out.sync()

    def cleanup(self) -> None:
        if self.out is not None:
            self.out.close()
        if self.strategy is not None:
            self.strategy.close()

    close = cleanup
