"""Sweep files: a session file with a ``[sweep]`` table (docs/sweep.md).

    load_sweep(path, workspace, layers=True) -> Sweep          raises SessionError (exit 2)

A trial's session (base + sampled knobs + budget) is ``trial.trial_session``.

The session part is checked by ``tuneterm.session`` (which skips ``[sweep]``); this module
checks the ``[sweep]`` table with the same one-line ``file:line: field: message`` problems.
No torch, no optuna at import time.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from tuneterm.session.check import FIELDS, check_set_values, check_value, did_you_mean, fmt, metric_problem, toml_type
from tuneterm.session.io import check_session_text
from tuneterm.session.locate import Locator
from tuneterm.session.problems import Problem, SessionError
from tuneterm.session.schema import METRIC_MODES, Session
from tuneterm.session.tasks import TASK_KNOBS, task_spec

# every task's metrics (the session's task decides which apply: metric_problem)
OBJECTIVES = {m: {"min": "minimize", "max": "maximize"}[mode] for m, mode in METRIC_MODES.items()}
DIRECTIONS = ("minimize", "maximize")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "successive_halving", "none")

# The knobs a search space may name: their kind, and where a sampled value goes.
#   float/int: a range {low, high[, log][, step][, points]} or {choices = [...]}
#   choice:    {choices = [...]} only
KNOBS = {
    "learning_rate": "float",
    "weight_decay": "float",
    "dropout": "float",
    "warmup_ratio": "float",
    "batch_size": "int",
    "schedule": "choice",
    "freeze_depth": "int",
    "lora_r": "int",
    "lora_alpha": "float",
    "lora_dropout": "float",
    **{k: "float" for k in TASK_KNOBS},  # a task's own (preference: beta, sft_weight)
}
# The adapters' knobs: sweep name -> [lora] field (a session with [lora] enabled only).
LORA_KNOBS = {"lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout"}
# The layer groups that freeze_depth never counts (the classifier head always trains).
_NEVER_FROZEN = ("head",)

SWEEP_KEYS = {
    "name": "the study's name (default: the session's name); trials are <name>-t000, -t001, ...",
    "objective": "a metric of the session's task: val_loss | val_accuracy | val_f1 (causal-lm: val_loss | "
                 "val_perplexity | val_token_accuracy; preference: val_loss | val_reward_accuracy | "
                 "val_reward_margin | ...)",
    "direction": "minimize | maximize (default: from the objective)",
    "trials": "trials to run to the end (complete, pruned or failed)",
    "max_steps": "optimizer steps per trial (the budget)",
    "sampler": "tpe | random | grid",
    "pruner": "median | successive_halving | none",
    "seed": "the sampler's seed",
    "pruner_startup_trials": "median: complete trials before pruning starts",
    "pruner_warmup_steps": "median: steps before a trial can be pruned",
    "parallel": "trials in the queue at once (default 1); match the runner's slots",
    "space": "the search space: knob = { low, high, log } or { choices = [...] }",
}
RANGE_KEYS = ("low", "high", "log", "step", "points", "choices")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,58}$")


@dataclass
class Param:
    name: str
    kind: str                      # "float" | "int" | "categorical"
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    points: int = 0                # grid: values to try in a float range
    choices: list = field(default_factory=list)

    def grid_values(self) -> list:
        """The values a grid sampler tries."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int" and not self.points:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        n = self.points
        if self.log:
            a, b = math.log(self.low), math.log(self.high)
            vals = [math.exp(a + (b - a) * i / (n - 1)) for i in range(n)]
        else:
            vals = [self.low + (self.high - self.low) * i / (n - 1) for i in range(n)]
        vals[0], vals[-1] = self.low, self.high  # exact ends (exp(log(x)) may round)
        if self.kind == "int":
            return sorted({int(round(v)) for v in vals})
        return vals

    def describe(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        return f"[{self.low}, {self.high}]" + (" log" if self.log else "")


@dataclass
class Sweep:
    file: str
    name: str
    base: Session
    objective: str
    direction: str
    trials: int
    max_steps: int
    sampler: str
    pruner: str
    seed: int
    space: dict[str, Param]
    pruner_startup_trials: int = 2
    pruner_warmup_steps: int = 0
    parallel: int = 1              # trials queued or running at once
    layer_groups: list[str] = field(default_factory=list)  # bottom-up, head excluded

    def trial_name(self, number: int) -> str:
        return f"{self.name}-t{number:03d}"


# -- loading ----------------------------------------------------------------------------

def load_sweep(path: str | os.PathLike, workspace: Path | None = None, *, layers: bool = True) -> Sweep:
    """Read and check a sweep file; raises SessionError with every problem (the first one
    is the one-line message). ``layers``: ask the engine (a subprocess) for the model's
    layer groups when the space has ``freeze_depth``."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SessionError([Problem(name, 1, "file", "no such file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SessionError([Problem(name, 1, "file", f"cannot read: {e}")]) from None
    base, problems = check_session_text(text, name, workspace)
    if problems:
        raise SessionError(problems)
    raw = tomllib.loads(text.removeprefix("\ufeff"))
    loc = Locator(text)
    sweep, found = build_sweep(raw, base, name)
    problems = [Problem(name, loc.line(p), p, m) for p, m in found]
    if problems:
        raise SessionError(problems)
    if layers and "freeze_depth" in sweep.space:
        sweep.layer_groups = model_layer_groups(path, workspace)
        p = sweep.space["freeze_depth"]
        top = max(p.choices) if p.kind == "categorical" else p.high
        n = len(sweep.layer_groups)
        if top > n:
            at = "sweep.space.freeze_depth." + ("choices" if p.kind == "categorical" else "high")
            raise SessionError([Problem(name, loc.line(at), at,
                                        f"{top} is beyond the model's {n} freezable layer groups "
                                        f"({', '.join(sweep.layer_groups)}); at most {n}")])
    return sweep


def model_layer_groups(path: str | os.PathLike, workspace: Path | None) -> list[str]:
    """The model's layer groups, bottom-up, without the head: from `tuneterm layers --json`
    in a subprocess (the engine imports torch; this layer does not)."""
    import json

    cmd = [sys.executable, "-m", "tuneterm", "layers", str(path), "--json"]
    if workspace is not None:
        cmd += ["--workspace", str(workspace)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["`tuneterm layers` failed"])[-1]
        raise SessionError([Problem(str(path), 1, "model.source",
                                    last.removeprefix("tuneterm: error: "))])
    rows = json.loads(r.stdout)["layers"]
    return [row["name"] for row in rows if row["name"] not in _NEVER_FROZEN]


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def build_sweep(raw: dict, base: Session, file: str) -> tuple[Sweep, list[tuple[str, str]]]:
    """The Sweep from the parsed file, and every problem as (key path, message)."""
    out: list[tuple[str, str]] = []
    sw = raw.get("sweep")
    if sw is None:
        out.append(("sweep", "no [sweep] table: a sweep file is a session file with a [sweep] table "
                             "(see docs/sweep.md)"))
        sw = {}
    elif not isinstance(sw, dict):
        out.append(("sweep", f"expected a table [sweep], got {toml_type(sw)} {fmt(sw)}"))
        sw = {}
    for k in sw:
        if k not in SWEEP_KEYS:
            out.append((f"sweep.{k}", "unknown key" + (did_you_mean(k, SWEEP_KEYS)
                                                        or f"; [sweep] has: {', '.join(SWEEP_KEYS)}")))

    def get(key, default, check, what):
        if key not in sw:
            return default
        v = sw[key]
        if not check(v):
            out.append((f"sweep.{key}", f"expected {what}, got {toml_type(v)} {fmt(v)}"))
            return default
        return v

    is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    name = get("name", base.session.name, lambda v: isinstance(v, str), "a string")
    if not _NAME.match(name):
        out.append(("sweep.name" if "name" in sw else "session.name",
                    f"{fmt(name)}: a sweep name is 1-59 letters, digits, '.', '_' or '-', "
                    "starting with a letter or digit"))
    objective = get("objective", "val_loss", lambda v: isinstance(v, str), "a string")
    if objective not in OBJECTIVES:
        out.append(("sweep.objective", f"unknown objective {fmt(objective)}; one of "
                    f"{', '.join(OBJECTIVES)}" + did_you_mean(objective, OBJECTIVES)))
        objective = "val_loss"
    elif metric_problem(base, objective):
        out.append(("sweep.objective", metric_problem(base, objective)))
    direction = get("direction", OBJECTIVES[objective], lambda v: isinstance(v, str), "a string")
    if direction not in DIRECTIONS:
        out.append(("sweep.direction", f"{fmt(direction)}: one of minimize, maximize"
                    + did_you_mean(direction, DIRECTIONS)))
    elif direction != OBJECTIVES[objective]:
        out.append(("sweep.direction", f"{direction} does not fit {objective} "
                    f"({OBJECTIVES[objective]} it, or leave direction out)"))
    trials = get("trials", 8, is_int, "an integer")
    if not 1 <= trials <= 100000:
        out.append(("sweep.trials", f"{trials} is out of range [1, 100000]"))
    max_steps = get("max_steps", 0, is_int, "an integer")
    if "max_steps" not in sw:
        out.append(("sweep", "max_steps (the steps each trial trains) is required"))
    elif max_steps < 1:
        out.append(("sweep.max_steps", f"{max_steps} must be at least 1"))
    sampler = get("sampler", "tpe", lambda v: isinstance(v, str), "a string")
    if sampler not in SAMPLERS:
        out.append(("sweep.sampler", f"unknown sampler {fmt(sampler)}; one of {', '.join(SAMPLERS)}"
                    + did_you_mean(sampler, SAMPLERS)))
    pruner = get("pruner", "median", lambda v: isinstance(v, str), "a string")
    if pruner not in PRUNERS:
        out.append(("sweep.pruner", f"unknown pruner {fmt(pruner)}; one of {', '.join(PRUNERS)}"
                    + did_you_mean(pruner, PRUNERS)))
    seed = get("seed", 0, is_int, "an integer")
    if not 0 <= seed < 2**32:
        out.append(("sweep.seed", f"{seed} is out of range [0, 2^32)"))
    startup = get("pruner_startup_trials", 2, is_int, "an integer")
    if startup < 0:
        out.append(("sweep.pruner_startup_trials", f"{startup} must be >= 0"))
    warm = get("pruner_warmup_steps", 0, is_int, "an integer")
    if warm < 0:
        out.append(("sweep.pruner_warmup_steps", f"{warm} must be >= 0"))
    parallel = get("parallel", 1, is_int, "an integer")
    if parallel < 1:
        out.append(("sweep.parallel", f"{parallel} must be >= 1 (trials at once)"))
        parallel = 1

    space: dict[str, Param] = {}
    raw_space = sw.get("space", {})
    if not isinstance(raw_space, dict):
        out.append(("sweep.space", f"expected a table [sweep.space], got {toml_type(raw_space)}"))
        raw_space = {}
    if not raw_space and isinstance(sw.get("space", {}), dict):
        out.append(("sweep.space" if "space" in sw else "sweep",
                    "the search space is empty; add [sweep.space] with knobs such as "
                    "learning_rate = { low = 1e-5, high = 1e-3, log = true }"))
    for knob, spec in raw_space.items():
        p = _param(knob, spec, base, sampler, out)
        if p is not None:
            space[knob] = p
    sweep = Sweep(file=file, name=name, base=base, objective=objective, direction=direction,
                  trials=trials, max_steps=max_steps, sampler=sampler, pruner=pruner, seed=seed,
                  space=space, pruner_startup_trials=startup, pruner_warmup_steps=warm,
                  parallel=parallel)
    if not out and base.hyperparameters.warmup_steps and "warmup_ratio" in space:
        out.append(("sweep.space.warmup_ratio", "the session sets hyperparameters.warmup_steps; "
                    "a sampled warmup_ratio replaces it (set warmup_steps = 0 to sweep the ratio)"))
    return sweep, out


def _param(knob: str, spec: Any, base: Session, sampler: str, out: list) -> Param | None:
    at = f"sweep.space.{knob}"
    if knob not in KNOBS:
        out.append((at, "unknown knob" + (did_you_mean(knob, KNOBS) or f"; knobs: {', '.join(KNOBS)}")))
        return None
    if knob in LORA_KNOBS and not base.lora.enabled:
        out.append((at, "the session trains no LoRA adapters (set [lora] enabled = true)"))
        return None
    if knob in TASK_KNOBS and knob not in task_spec(base.model.task).live_knobs:
        out.append((at, f"a {TASK_KNOBS[knob][0]} knob, but the session's task is {base.model.task}"))
        return None
    if not isinstance(spec, dict):
        out.append((at, f"expected {{ low = ..., high = ... }} or {{ choices = [...] }}, "
                        f"got {toml_type(spec)} {fmt(spec)}"))
        return None
    bad = [k for k in spec if k not in RANGE_KEYS]
    for k in bad:
        out.append((f"{at}.{k}", "unknown key" + (did_you_mean(k, RANGE_KEYS)
                                                 or f"; use {', '.join(RANGE_KEYS)}")))
    if bad:
        return None
    kind = KNOBS[knob]
    n0 = len(out)
    if "choices" in spec:
        extra = [k for k in spec if k != "choices"]
        if extra:
            out.append((f"{at}.{extra[0]}", "give either choices or a range (low, high), not both"))
            return None
        ch = spec["choices"]
        if not isinstance(ch, list) or not ch:
            out.append((f"{at}.choices", "expected a non-empty list of values"))
            return None
        if len(set(map(repr, ch))) != len(ch):
            out.append((f"{at}.choices", "a value is listed twice"))
        for j, v in enumerate(ch):
            _check_value(knob, v, f"{at}.choices[{j}]", base, out)
        return Param(knob, "categorical", choices=list(ch)) if len(out) == n0 else None
    if kind == "choice":
        out.append((at, f"{knob} takes {{ choices = [...] }}, not a range"))
        return None
    for k in ("low", "high"):
        if k not in spec:
            out.append((at, f"a range needs low and high (missing {k})"))
            return None
    low, high = spec["low"], spec["high"]
    for k, v in (("low", low), ("high", high)):
        ok = (isinstance(v, int) and not isinstance(v, bool)) if kind == "int" else _is_num(v)
        if not ok:
            out.append((f"{at}.{k}", f"expected {'an integer' if kind == 'int' else 'a number'}, "
                                     f"got {toml_type(v)} {fmt(v)}"))
    if len(out) > n0:
        return None
    log = spec.get("log", False)
    if not isinstance(log, bool):
        out.append((f"{at}.log", f"expected true or false, got {toml_type(log)} {fmt(log)}"))
        return None
    if low >= high:
        out.append((f"{at}.low", f"empty range: low {fmt(low)} must be below high {fmt(high)}"))
        return None
    if log and low <= 0:
        out.append((f"{at}.low", f"a log range must stay above zero; low is {fmt(low)}"))
        return None
    step = spec.get("step")
    if step is not None:
        ok = (isinstance(step, int) and not isinstance(step, bool)) if kind == "int" else _is_num(step)
        if not ok or step <= 0:
            out.append((f"{at}.step", f"expected a positive {'integer' if kind == 'int' else 'number'}, got {fmt(step)}"))
        elif log:
            out.append((f"{at}.step", "step and log cannot be combined"))
        elif step > high - low:
            out.append((f"{at}.step", f"{fmt(step)} is wider than the range"))
    points = spec.get("points", 0)
    if not (isinstance(points, int) and not isinstance(points, bool)) or (points and points < 2):
        out.append((f"{at}.points", f"expected an integer >= 2, got {fmt(points)}"))
    elif sampler == "grid" and kind == "float" and not points:
        out.append((at, "the grid sampler needs the values to try: add points = N (or use choices)"))
    if len(out) > n0:
        return None
    if knob == "freeze_depth":
        if low < 0:
            out.append((f"{at}.low", f"{low} must be >= 0"))
            return None
    else:
        _check_value(knob, low, f"{at}.low", base, out)
        _check_value(knob, high, f"{at}.high", base, out)
    if len(out) > n0:
        return None
    return Param(knob, kind, low=low, high=high, log=log, step=step, points=points)


def _check_value(knob: str, v: Any, at: str, base: Session, out: list) -> None:
    """A value the knob may take, held to the session schema's type and range."""
    if knob == "freeze_depth":
        if not (isinstance(v, int) and not isinstance(v, bool)) or v < 0:
            out.append((at, f"expected an integer >= 0, got {fmt(v)}"))
        return
    if knob in LORA_KNOBS:
        _, msg = check_value(FIELDS["lora"][LORA_KNOBS[knob]], v)
        if msg:
            out.append((at, msg))
        return
    for msg in check_set_values({knob: v}):
        out.append((at, msg.split(": ", 1)[1] if ": " in msg else msg))
