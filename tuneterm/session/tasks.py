"""The tasks, one description each (no torch, no textual): everything outside the engine's
task module that differs between tasks reads it here — the validator (metrics, formats),
early stopping and sweeps (which way a metric improves), the TUI (charts, tabs, knobs),
`eval`/`predict`/`export` (model class, pipeline tag), LoRA (PEFT's task type).

Adding a task = one engine module (tuneterm/engine/tasks/, the ``Task`` protocol of
tasks/base.py) + one row here. A name not in the table is an error wherever it is met,
never a silent fallback to classification.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneterm.errors import UserError


@dataclass(frozen=True)
class Chart:
    """A chart beside the loss: its title and the metric of training rows and of
    evaluation rows it draws (either may be None)."""
    title: str
    train: str | None
    val: str | None


@dataclass(frozen=True)
class TaskSpec:
    name: str
    engine: tuple  # (module, class) of the engine's task; imported only when used
    metrics: dict  # evaluation metrics -> "min" | "max" (which way each improves)
    charts: tuple  # Chart rows drawn beside the loss
    model: str  # what the engine builds: "classifier" | "causal-lm" (a language-model head)
    peft_task_type: str  # PEFT's TaskType for the LoRA adapters
    export_class: str  # the transformers AutoModelFor* class an exported folder loads with
    pipeline_tag: str  # the model card's pipeline tag
    formats: tuple  # `[data] format` values it reads ("auto" first)
    records: bool  # reads records (.json arrays and message lists too), not only labelled tables
    samples: bool  # generation samples at each evaluation (samples.jsonl, the Samples tab)
    confusion: bool  # a confusion matrix of the validation set (the Confusion tab)
    train_metrics: tuple = ()  # extra values of each training row (beside loss, lr, grad_norm)
    section: str | None = None  # the session table of the task's own knobs
    live_knobs: tuple = ()  # those of its knobs a live edit may change (in `section`)
    doc: str = ""  # where it is explained

    @property
    def eval_keys(self) -> tuple:
        """What `tuneterm eval` reports, in order: the metrics without their ``val_``."""
        return tuple(m.removeprefix("val_") for m in self.metrics)


PREFERENCE_TRAIN = ("reward_accuracy", "reward_margin", "reward_chosen", "reward_rejected", "logps_chosen",
                    "logps_rejected")

TASK_TABLE = {
    "sequence-classification": TaskSpec(
        name="sequence-classification",
        engine=("tuneterm.engine.tasks.classification", "SequenceClassificationTask"),
        metrics={"val_loss": "min", "val_accuracy": "max", "val_f1": "max"},
        charts=(Chart("val accuracy", None, "val_accuracy"),),
        model="classifier", peft_task_type="SEQ_CLS", export_class="AutoModelForSequenceClassification",
        pipeline_tag="text-classification", formats=("auto",), records=False, samples=False, confusion=True,
        doc="docs/session.md"),
    "causal-lm": TaskSpec(
        name="causal-lm",
        engine=("tuneterm.engine.tasks.causal_lm", "CausalLMTask"),
        metrics={"val_loss": "min", "val_perplexity": "min", "val_token_accuracy": "max"},
        charts=(Chart("token accuracy", None, "val_token_accuracy"),),
        model="causal-lm", peft_task_type="CAUSAL_LM", export_class="AutoModelForCausalLM",
        pipeline_tag="text-generation", formats=("auto", "text", "prompt-completion", "messages"), records=True,
        samples=True, confusion=False, doc="docs/causal-lm.md"),
    "preference": TaskSpec(
        name="preference",
        engine=("tuneterm.engine.tasks.preference", "PreferenceTask"),
        metrics={"val_loss": "min", "val_reward_accuracy": "max", "val_reward_margin": "max",
                 "val_reward_chosen": "max", "val_reward_rejected": "min", "val_logps_chosen": "max",
                 "val_logps_rejected": "min"},
        charts=(Chart("reward accuracy", "reward_accuracy", "val_reward_accuracy"),
                Chart("reward margin", "reward_margin", "val_reward_margin")),
        model="causal-lm", peft_task_type="CAUSAL_LM", export_class="AutoModelForCausalLM",
        pipeline_tag="text-generation", formats=("auto", "prompt-chosen-rejected", "chosen-rejected"),
        records=True, samples=True, confusion=False, train_metrics=PREFERENCE_TRAIN, section="preference",
        live_knobs=("beta", "sft_weight"), doc="docs/preference.md"),
}
TASKS = tuple(TASK_TABLE)


def task_spec(name: str) -> TaskSpec:
    """The description of task ``name``; UserError (one line) for a name not in the table."""
    spec = TASK_TABLE.get(name)
    if spec is None:
        raise UserError(f"model.task: unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return spec


def _metric_modes() -> dict:
    modes: dict = {}
    for spec in TASK_TABLE.values():
        for metric, mode in spec.metrics.items():
            if modes.setdefault(metric, mode) != mode:  # one metric name, one direction, in every task
                raise AssertionError(f"{metric} improves both ways across tasks")
    return modes


METRIC_MODES = _metric_modes()
FORMATS = tuple(dict.fromkeys(f for spec in TASK_TABLE.values() for f in spec.formats))
# Live-editable knobs of tasks: key -> (section, field).
TASK_KNOBS = {k: (spec.section, k) for spec in TASK_TABLE.values() for k in spec.live_knobs}
