"""A tiny-BERT sweep file for the sweep tests (a session file with a [sweep] table)."""

BASE = """\
[session]
name = "{name}"
seed = 5

[model]
source = "builtin:tiny-bert"

[data]
source = "builtin:bbc-news"
max_length = 24
max_samples = 96
max_eval_samples = 32

[hyperparameters]
learning_rate = 2e-3
batch_size = 8
dropout = 0.1
schedule = "linear"

[evaluation]
interval_steps = 3

[checkpoint]
interval_steps = 3

[runtime]
kernels = "torch"
device = "cpu"
threads = 1

[sweep]
objective = "val_loss"
trials = {trials}
max_steps = {steps}
sampler = "{sampler}"
pruner = "median"
pruner_startup_trials = 1
seed = 3
{extra}
[sweep.space]
{space}
"""

SPACE = """\
learning_rate = { low = 1e-6, high = 1e-1, log = true }
dropout = { low = 0.0, high = 0.3 }
batch_size = { choices = [8, 16] }
"""


def sweep_text(name: str = "sw", trials: int = 8, steps: int = 12, sampler: str = "random",
               space: str = SPACE, extra: str = "") -> str:
    """``extra``: more [sweep] lines (e.g. "parallel = 2\n")."""
    return BASE.format(name=name, trials=trials, steps=steps, sampler=sampler, space=space, extra=extra)
