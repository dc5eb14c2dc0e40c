"""The session file's schema: plain dataclasses, no torch, no textual.

Every table of a session TOML file maps to one dataclass here; every key to one field.
The loader (``tuneterm.session.io``) turns TOML into these objects and checks ranges; the
engine reads them; ``to_dict`` turns them back into TOML-ready dicts (round trip).

Field metadata carries what the validator and the TUI need: a one-line ``help`` and,
where it applies, the allowed range (``min``/``max``, with ``min_open``/``max_open`` for
open interval ends) or the allowed ``choices``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tuneterm.session.tasks import FORMATS, METRIC_MODES, TASK_KNOBS, TASK_TABLE, TASKS

SCHEDULES = ("constant", "linear", "cosine", "cosine_with_restarts", "polynomial", "inverse_sqrt")
# The tasks, their metrics and which way each improves: one row per task in session/tasks.py.
TASK_METRICS = {name: tuple(spec.metrics) for name, spec in TASK_TABLE.items()}
METRICS = tuple(METRIC_MODES)
LM_FORMATS = FORMATS  # every task's `[data] format` values (check.py holds a session to its task's)
PREFERENCE_LOSSES = ("dpo", "ipo", "hinge", "simpo", "orpo")
REFERENCES = ("auto", "precompute", "none")
LOSS_ON = ("completion", "all")
PRECISIONS = ("auto", "fp32", "bf16")
NONFINITE_POLICIES = ("stop", "skip")
KERNELS = ("auto", "triton", "torch")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("float32", "bfloat16")
# The built-in sources (the engine's registries must match; the validator checks names
# against these without importing the engine).
BUILTIN_MODELS = ("builtin:minilm-l6", "builtin:tiny-bert", "builtin:tiny-gpt2", "builtin:tiny-llama",
                  "builtin:smollm2-135m")
# The built-ins with a language-model head (task = "causal-lm").
CAUSAL_LM_MODELS = ("builtin:tiny-gpt2", "builtin:tiny-llama", "builtin:smollm2-135m")
BUILTIN_DATA = ("builtin:bbc-news", "builtin:tweet-sentiment")

# Knobs that a live edit (`tuneterm set`, the TUI, the control channel) may change while a
# run trains, and where they live in the session. Everything else is fixed for a run.
EDITABLE = {
    "learning_rate": "hyperparameters",
    "weight_decay": "hyperparameters",
    "dropout": "hyperparameters",
    "batch_size": "hyperparameters",
    "gradient_accumulation": "hyperparameters",
    "epochs": "hyperparameters",
    "max_steps": "hyperparameters",
    "schedule": "hyperparameters",
    "warmup_steps": "hyperparameters",
    "warmup_ratio": "hyperparameters",
    "grad_clip": "hyperparameters",
    "patience": "early_stopping",
    "train_base": "lora",
    **{key: section for key, (section, _) in TASK_KNOBS.items()},  # a task's own (preference: beta, sft_weight)
}
# Live-editable keys whose name differs from their field: key -> (section, field).
EDITABLE_ALIASES = {
    "lora_dropout": ("lora", "dropout"),
    "lora_lr_ratio": ("lora", "lr_ratio"),
}
LIVE_KEYS = (*EDITABLE, *EDITABLE_ALIASES)


def editable_path(key: str) -> tuple[str, str] | None:
    """Where a live-editable key lives: (section, field), or None when it is not editable
    (``lora_dropout`` -> ("lora", "dropout"), ``learning_rate`` -> ("hyperparameters",
    "learning_rate"))."""
    if key in EDITABLE:
        return EDITABLE[key], key
    return EDITABLE_ALIASES.get(key)


def live_name(section: str, name: str) -> str | None:
    """The live-edit key of a field, or None when it is fixed for a run."""
    if EDITABLE.get(name) == section:
        return name
    for key, where in EDITABLE_ALIASES.items():
        if where == (section, name):
            return key
    return None


def metric_mode(metric: str) -> str:
    """'min' | 'max': which way a metric improves."""
    return METRIC_MODES[metric]


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with validator/TUI metadata."""
    meta["help"] = help
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class SessionMeta:
    name: str = _f("session", "name of the session; runs are named after it",
                   pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                   pattern_help="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    seed: int = _f(0, "seed for data order, dropout masks and the head's initialisation", min=0, max=2**63 - 1)
    description: str = _f("", "free text")


@dataclass
class ModelSpec:
    source: str = _f("builtin:tiny-bert",
                     "builtin:minilm-l6 | builtin:tiny-bert | builtin:tiny-gpt2 | builtin:tiny-llama | "
                     "builtin:smollm2-135m | "
                     "a local Hugging Face model folder (relative to the workspace) | a hub id (online only)",
                     nonempty=True)
    task: str = _f("sequence-classification", "what the model is trained to do (causal-lm: see docs/causal-lm.md; "
                   "preference: docs/preference.md)", choices=TASKS)
    dtype: str = _f("float32", "parameter dtype; bfloat16 keeps fp32 master weights in the optimizer",
                    choices=DTYPES)


@dataclass
class DataSpec:
    source: str = _f("builtin:bbc-news",
                     "builtin:bbc-news | builtin:tweet-sentiment | a local .csv, .jsonl or .parquet file or a "
                     "datasets save_to_disk folder (causal-lm: also .json) (relative to the workspace)",
                     nonempty=True)
    text_field: str = _f("text", "column/key holding the text (local files; causal-lm format text)", nonempty=True)
    label_field: str = _f("label", "column/key holding the label (local files)", nonempty=True)
    validation: str = _f("", "a separate validation file or datasets folder (the kinds source takes); empty: split "
                         "off validation_split")
    validation_split: float = _f(0.2, "share of the data held out for validation", min=0.0, max=1.0,
                                 min_open=True, max_open=True)
    max_length: int = _f(128, "tokens per example after truncation", min=8, max=8192)
    max_samples: int = _f(0, "cap on training examples (0: all) — start small", min=0)
    max_eval_samples: int = _f(0, "cap on validation examples (0: all)", min=0)
    format: str = _f("auto", "causal-lm: text | prompt-completion | messages; preference: prompt-chosen-rejected | "
                     "chosen-rejected (the prompt implicit); auto: from the first record's keys", choices=LM_FORMATS)
    prompt_field: str = _f("prompt", "causal-lm prompt-completion, preference: key holding the prompt", nonempty=True)
    completion_field: str = _f("completion", "causal-lm prompt-completion: key holding the completion", nonempty=True)
    messages_field: str = _f("messages", "causal-lm messages: key holding a list of {role, content}",
                             nonempty=True)
    chosen_field: str = _f("chosen", "preference: key holding the preferred completion (a string or a list of "
                           "{role, content})", nonempty=True)
    rejected_field: str = _f("rejected", "preference: key holding the other completion", nonempty=True)
    prompt_template: str = _f("", "causal-lm: builds the prompt from a record's keys, e.g. "
                              "'{instruction}\\n\\n{input}' (empty: prompt_field)", format_template=True)
    loss_on: str = _f("completion", "causal-lm: completion (the completion / assistant turns and their "
                      "end-of-turn token) | all (every token)", choices=LOSS_ON)
    packing: bool = _f(False, "causal-lm: pack examples into max_length rows (no attention across examples)")


@dataclass
class Hyperparameters:
    learning_rate: float = _f(5e-5, "peak learning rate", min=0.0, max=1.0, min_open=True)
    batch_size: int = _f(16, "examples per micro-batch", min=1, max=65536)
    gradient_accumulation: int = _f(1, "micro-batches per optimizer step", min=1, max=4096)
    # 0 is allowed so that `max_steps = 500, epochs = 0` reads naturally; the validator
    # requires one of the two to be > 0.
    epochs: float = _f(1.0, "passes over the training data (ignored when max_steps > 0)", min=0.0,
                       max=10000.0)
    max_steps: int = _f(0, "optimizer steps to run (0: derive from epochs)", min=0)
    dropout: float = _f(0.1, "dropout probability in every dropout site", min=0.0, max=1.0, max_open=True)
    weight_decay: float = _f(0.01, "decoupled weight decay on weights of dim >= 2", min=0.0, max=10.0)
    schedule: str = _f("linear", "learning-rate schedule after warmup", choices=SCHEDULES)
    warmup_ratio: float = _f(0.0, "share of the total steps spent warming up", min=0.0, max=1.0)
    warmup_steps: int = _f(0, "warmup steps (overrides warmup_ratio when > 0; a session file gives one of the two)", min=0)
    num_cycles: float = _f(1.0, "cosine_with_restarts: number of hard restarts", min=0.0, min_open=True)
    power: float = _f(1.0, "polynomial: decay power", min=0.0, min_open=True)
    lr_end: float = _f(0.0, "polynomial: final learning rate", min=0.0)
    grad_clip: float = _f(1.0, "max global gradient norm (0: no clipping)", min=0.0)
    adam_beta1: float = _f(0.9, "Adam beta1", min=0.0, max=1.0, max_open=True)
    adam_beta2: float = _f(0.999, "Adam beta2", min=0.0, max=1.0, max_open=True)
    adam_eps: float = _f(1e-8, "Adam epsilon", min=0.0, max=1.0, min_open=True)


@dataclass
class EvaluationSpec:
    interval_steps: int = _f(0, "evaluate every N optimizer steps (0: at each epoch end)", min=0)
    metrics: list = _f(["loss", "accuracy", "f1"], "validation metrics to compute (sequence-classification; "
                       "causal-lm always reports loss, perplexity and token_accuracy)",
                       item_choices=("loss", "accuracy", "f1"))
    batch_size: int = _f(0, "evaluation batch size (0: twice the training batch size)", min=0)
    samples: int = _f(4, "causal-lm, preference: validation prompts generated (greedy) at each evaluation (0: none)",
                      min=0, max=1000)
    max_new_tokens: int = _f(48, "causal-lm, preference: tokens generated per sample at most", min=1, max=4096)


@dataclass
class EarlyStopping:
    enabled: bool = _f(False, "stop when the metric stops improving")
    metric: str = _f("val_loss", "metric to watch: one of the task's (causal-lm: val_loss, val_perplexity, "
                     "val_token_accuracy; preference: val_loss, val_reward_accuracy, val_reward_margin, ...)",
                     choices=METRICS)
    mode: str = _f("", "min | max (empty: min for losses and perplexity, max otherwise)", choices=("", "min", "max"))
    patience: int = _f(3, "evaluations without improvement before stopping", min=1, max=100000)
    min_delta: float = _f(0.0, "smallest change that counts as an improvement", min=0.0)


@dataclass
class CheckpointSpec:
    interval_steps: int = _f(100, "checkpoint every N optimizer steps (0: only at the end/pause)", min=0)
    keep_last: int = _f(2, "checkpoints kept besides the best", min=1, max=1000)
    keep_best: bool = _f(True, "keep the checkpoint with the best early-stopping metric")


@dataclass
class FreezeSpec:
    layers: list = _f([], "layer groups frozen at the start (see `tuneterm layers`)")


@dataclass
class LoraSpec:
    """Low-rank adapters (PEFT LoRA) instead of training the whole model."""
    enabled: bool = _f(False, "train LoRA adapters; the base weights stay frozen except train_base")
    r: int = _f(8, "adapter rank", min=1, max=4096)
    alpha: float = _f(16.0, "adapter scaling numerator (scale = alpha / r, or alpha / sqrt(r) with use_rslora)",
                      min=0.0, max=1e6, min_open=True)
    dropout: float = _f(0.05, "dropout on the adapters' input", min=0.0, max=1.0, max_open=True)
    target_modules: list = _f("all-linear", "'all-linear' or a list of module names to adapt", or_string=True)
    use_rslora: bool = _f(False, "rank-stabilised scaling alpha / sqrt(r)")
    use_dora: bool = _f(False, "DoRA (PEFT's use_dora): a learned magnitude per output beside the low-rank "
                        "direction; live edits, export and replay as for LoRA")
    train_base: list = _f([], "layer groups trained fully beside the adapters (see `tuneterm layers`)")
    lr_ratio: float = _f(1.0, "LoRA+: the learning rate of B over that of A", min=0.0, max=1e6, min_open=True)


@dataclass
class PreferenceSpec:
    """Preference tuning (`model.task = "preference"`, docs/preference.md); other tasks ignore this table."""
    loss: str = _f("dpo", "dpo (sigmoid) | ipo | hinge | simpo | orpo (simpo and orpo use no reference model)",
                   choices=PREFERENCE_LOSSES)
    beta: float = _f(0.1, "how far the policy may move from the reference (dpo, hinge: the reward scale; "
                     "ipo: 1/(2 beta) is the target margin; orpo: the odds-ratio term's weight)",
                     min=0.0, max=100.0, min_open=True)
    label_smoothing: float = _f(0.0, "dpo, simpo: the share of pairs taken to be flipped (conservative DPO)",
                                min=0.0, max=0.5, max_open=True)
    sft_weight: float = _f(0.0, "weight of an SFT term, the chosen completion's mean token NLL (RPO); orpo "
                           "adds its own at weight 1", min=0.0, max=100.0)
    reference: str = _f("auto", "auto (under LoRA the base with the adapters off, else a frozen copy) | precompute "
                        "(reference log-probs computed once before step 1, kept in the run directory) | none "
                        "(simpo, orpo)", choices=REFERENCES)
    simpo_gamma: float = _f(0.5, "simpo: the target reward margin over beta (gamma / beta)", min=0.0, max=100.0)


@dataclass
class RuntimeSpec:
    device: str = _f("auto", "auto | cpu | cuda", choices=DEVICES)
    kernels: str = _f("auto", "auto (Triton on CUDA) | triton | torch", choices=KERNELS)
    nonfinite: str = _f("stop", "on a NaN/inf loss: stop (fail, keep the last good checkpoint) | skip the step",
                        choices=NONFINITE_POLICIES)
    threads: int = _f(0, "CPU threads for torch (0: torch's default)", min=0, max=1024)
    gradient_checkpointing: bool = _f(False, "recompute activations in the backward pass (less memory, "
                                      "same result: dropout masks are redrawn identically)")
    precision: str = _f("auto", "auto | fp32 | bf16 (autocast, fp32 master weights)", choices=PRECISIONS)
    compile: bool = _f(False, "torch.compile the model's transformer stack (its backbone)")
    deterministic: bool = _f(False, "deterministic algorithms: bit-exact replay on the same GPU")
    max_wall_s: float = _f(0.0, "wall-clock limit for the session in seconds (0: none)", min=0.0)


DIST_STRATEGIES = ("ddp", "fsdp")
DIST_BACKENDS = ("auto", "gloo", "nccl")


@dataclass
class DistributedSpec:
    """One session on several processes, started by torch.distributed's elastic agent
    (docs/distributed.md). A step trains the same units in the same order at any count."""
    processes: int = _f(1, "ranks for this one session (1: a single process)", min=1, max=1024)
    strategy: str = _f("ddp", "ddp: every rank holds the model, gradients are summed across ranks | fsdp: FSDP2, "
                       "each rank holds 1/N of the weights and moments (sharded checkpoints)", choices=DIST_STRATEGIES)
    backend: str = _f("auto", "auto (nccl on CUDA, gloo on the CPU) | gloo | nccl", choices=DIST_BACKENDS)


# An MLflow tracking URI: empty (off), a scheme MLflow knows, or a path (a file store).
MLFLOW_URI = r"^$|^(sqlite:///|file:|https?://|databricks|postgresql|mysql|mssql)[^\s]*$|^[^:\s][^:]*$"


@dataclass
class TrackingSpec:
    """Trackers written live by the process that writes metrics.jsonl (docs/tracking.md).
    A key left at its default takes the workspace's `[tracking]` (`.tuneterm/config.toml`)
    unless `inherit = false`. A tracker that fails never stops the run: one warning in log.txt."""
    tensorboard: bool = _f(False, "write runs/<id>/tensorboard/: train/* and eval/* scalars, the knobs, "
                           "each edit as text at its step")
    mlflow: str = _f("", "an MLflow tracking URI: \"sqlite:///mlflow.db\", \"./mlruns\", \"http://host:5000\" "
                     "(relative paths start at the workspace); empty: off",
                     pattern=MLFLOW_URI, pattern_help="expected a tracking URI such as \"sqlite:///mlflow.db\", "
                     "\"./mlruns\" or \"http://host:5000\"")
    experiment: str = _f("tuneterm", "the MLflow experiment the run is logged in", nonempty=True)
    inherit: bool = _f(True, "take the keys left at their defaults from the workspace's [tracking] "
                       "(.tuneterm/config.toml); false: this table alone")


@dataclass
class Edit:
    """One entry of the live-edit log: applied when ``step`` optimizer steps have completed,
    before the next step starts."""
    step: int
    set: dict = field(default_factory=dict)
    freeze: list = field(default_factory=list)
    unfreeze: list = field(default_factory=list)
    stop: bool = False  # a `stop` request: recorded so that a replay ends at the same step

    def to_dict(self) -> dict:
        d: dict = {"step": self.step}
        if self.set:
            d["set"] = dict(self.set)
        if self.freeze:
            d["freeze"] = list(self.freeze)
        if self.unfreeze:
            d["unfreeze"] = list(self.unfreeze)
        if self.stop:
            d["stop"] = True
        return d


@dataclass
class Session:
    session: SessionMeta = field(default_factory=SessionMeta)
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    checkpoint: CheckpointSpec = field(default_factory=CheckpointSpec)
    freeze: FreezeSpec = field(default_factory=FreezeSpec)
    lora: LoraSpec = field(default_factory=LoraSpec)
    preference: PreferenceSpec = field(default_factory=PreferenceSpec)
    runtime: RuntimeSpec = field(default_factory=RuntimeSpec)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    distributed: DistributedSpec = field(default_factory=DistributedSpec)
    edits: list = field(default_factory=list)  # list[Edit]

    @property
    def name(self) -> str:
        return self.session.name

    def to_dict(self) -> dict:
        """A TOML-ready dict: every section, then the edit log (omitted when empty)."""
        out: dict = {}
        for sec in SECTIONS:
            out[sec] = dataclasses.asdict(getattr(self, sec))
        if self.edits:
            out["edits"] = [e.to_dict() for e in self.edits]
        return out

    def copy(self) -> "Session":
        return copy.deepcopy(self)


# Each table of a session file: its name -> its dataclass (from Session's fields, listed once).
SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(Session) if f.name != "edits"}
