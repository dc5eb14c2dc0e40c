"""The session-file reference (docs/session.md) and the commented template
(templates/session.toml), both generated from the schema's field metadata so that they
cannot drift from what the validator enforces. A test checks both are in sync.

    python -m tuneterm.session.reference            # rewrite both files
    python -m tuneterm.session.reference --check    # exit 1 if either is stale
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from tuneterm.session.check import DATA_SUFFIXES, FIELDS, kind, range_text
from tuneterm.session.io import _value
from tuneterm.session.schema import BUILTIN_DATA, BUILTIN_MODELS, LIVE_KEYS, SECTIONS, live_name
from tuneterm.session.tasks import TASK_TABLE

TEMPLATE_PATH = Path(__file__).parent / "templates" / "session.toml"
DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "session.md"

_TYPE = {"int": "integer", "float": "number", "bool": "boolean", "str": "string", "list": "list of strings"}

_METRICS = "\n".join(
    f"  | `{name}` | " + ", ".join(f"`{m}` ({mode})" for m, mode in spec.metrics.items()) + " |"
    for name, spec in TASK_TABLE.items())
_METRICS = "  | task | metrics (which way each improves) |\n  |---|---|\n" + _METRICS

_INTRO = f"""\
# Session files

<!-- Generated from tuneterm/session/schema.py by `python -m tuneterm.session.reference`;
     edit the schema's metadata, not this page. A test keeps the two in sync. -->

A session file is a TOML file that says what to fine-tune, on what, and how. People write
them in `sessions/`; every run keeps its own frozen copy in `runs/<run-id>/session.toml`,
with the live edits appended as `[[edits]]` so that `tuneterm replay` can repeat the run.
Every key is optional: a missing key takes the default below, and an empty file is a
valid session (tiny BERT on BBC News). A session saved by tuneterm lists every key, so
that it does not depend on defaults that may change.

```toml
[session]
name = "bbc-minilm"

[model]
source = "builtin:minilm-l6"

[data]
source = "builtin:bbc-news"
max_samples = 800            # start small

[hyperparameters]
learning_rate = 5e-5
epochs = 2

[early_stopping]
enabled = true
```

Check files with `tuneterm validate FILE...`. Every problem is printed as
`file:line: field: message` — e.g.
`sessions/a.toml:12: hyperparameters.dropout: 1.5 is out of range [0, 1)` — and the
command exits 2 if any file has one. `--no-model` skips loading the model to check
layer names; `--deep` also loads the data and runs the model once, `--smoke` trains a
few steps. The template `tuneterm/session/templates/session.toml` lists every key with
its default, commented out.

## Rules

- Unknown tables and keys are errors (with a did-you-mean), not ignored.
- Types are strict: an integer is fine where a number is expected (`epochs = 2`), but
  `16.0` is not an integer, `true` is not a number, and `"5e-5"` is a string.
- TOML's `nan` and `inf` are rejected everywhere.
- Ranges are shown as intervals: `[0, 1)` includes 0 and excludes 1.
- **Sources.** `model.source` is a built-in (`{"`, `".join(BUILTIN_MODELS)}`), a local
  Hugging Face model folder, or a hub id such as `org/name` (used only when the machine is
  online). `data.source` is a built-in (`{"`, `".join(BUILTIN_DATA)}`) or a local
  {" or ".join(f"`{s}`" for s in DATA_SUFFIXES)} file, or a folder written by `datasets`'
  `save_to_disk` (one split's folder), with the columns/keys named by `text_field` and
  `label_field`; `data.validation`, when set, is such a file or folder too.
- **Paths** are relative to the workspace (`--workspace`, else `$TUNETERM_HOME`, else the
  current folder), not to the session file; they must exist and stay inside the workspace
  (`../` or a symlink that leads out is rejected). A source that starts with `./`, `../`
  or `/`, or that exists, is a path; anything else of the form `org/name` is a hub id.
- `epochs` and `max_steps` cannot both be 0; when `max_steps > 0` it decides the length
  of the run and `epochs` is ignored.
- Give `warmup_ratio` or `warmup_steps`, not both; warmup must leave steps to train.
- `early_stopping.mode` must fit the metric (empty picks it), and the metric must be one
  the task reports (for `sequence-classification`, among `evaluation.metrics` too):

{_METRICS}
- **Causal LM** (`model.task = "causal-lm"`): the model is a built-in with a language-model
  head (`builtin:tiny-gpt2`, `builtin:tiny-llama`, `builtin:smollm2-135m`) or a causal-LM
  folder; the data is `.jsonl`, `.json`, `.csv`, `.parquet` or a `datasets` folder in the `[data]` `format` (text,
  prompt-completion, messages); `builtin:bbc-news` gives article -> headline pairs.
  `docs/causal-lm.md` explains formats, masking, packing and samples.
- **Preference** (`model.task = "preference"`): a causal-LM model as above, trained on
  pairs of completions (`prompt`/`chosen`/`rejected`, strings or message lists, or
  `chosen`/`rejected` alone) with the loss and reference model of `[preference]`;
  `builtin:bbc-news` prefers each article's real headline to another article's.
  `docs/preference.md` explains formats, losses, the reference model and truncation.
- Layer names (`[freeze]`, `[[edits]]`) are the model's layer groups: `embeddings`,
  `layer.0` … `layer.N-1`, `head`; `tuneterm layers SESSION` lists them.
"""

_EDITS = f"""\
## `[[edits]]`: the live-edit log

Each live edit that a run applies is appended here by the engine; `tuneterm replay` applies
them again at the same steps. You may also write edits by hand to script a run (for
example, unfreeze the embeddings after 200 steps).

| key | type | meaning |
|---|---|---|
| `step` | integer ≥ 0 | applied when this many optimizer steps have completed, before the next one; entries in non-decreasing order |
| `set` | table | new values for editable keys (below), each held to the same type and range as in its own table |
| `freeze` | list of strings | layer groups to freeze |
| `unfreeze` | list of strings | layer groups to unfreeze (their optimizer state starts from zero) |
| `stop` | boolean | the run was stopped here on request (`tuneterm` writes it; a replay ends at the same step) |

An entry needs `set`, `freeze`, `unfreeze` or `stop`.

```toml
[[edits]]
step = 120
set = {{ learning_rate = 2e-5 }}

[[edits]]
step = 300
unfreeze = ["layer.1"]
```

Editable keys (also what `tuneterm set RUN key=value` and the TUI may change while a run
trains): {", ".join(f"`{k}`" for k in LIVE_KEYS)}. Everything else is fixed for a run.
`lora_dropout` and `lora_lr_ratio` are `[lora]`'s `dropout` and `lr_ratio`; `train_base`
takes a list of layer groups. These three need `[lora] enabled = true`; `beta` and
`sft_weight` (`[preference]`'s) need `model.task = "preference"`. An edit that would
leave nothing to train (every group with adapters or a trained base frozen) is refused:
live, and by `validate`, which follows the log against the model.

## `[sweep]`: a hyperparameter search over this session

A session file may carry a `[sweep]` table; `tuneterm sweep FILE` reads it (see
`docs/sweep.md`). Everything else ignores it: `run`, `validate` and `layers` treat the file
as the base session, and a session saved by tuneterm never contains the table.
"""


def allowed(f: dataclasses.Field) -> str:
    m = f.metadata
    if "choices" in m:
        return " \\| ".join(f"`{c}`" if c else "`\"\"`" for c in m["choices"])
    if "item_choices" in m:
        return "each of " + ", ".join(f"`{c}`" for c in m["item_choices"])
    if "pattern_help" in m:
        return m["pattern_help"]
    if m.get("nonempty"):
        return "not empty"
    rt = range_text(m)
    return rt.replace("|", "\\|") if rt else ""


def render_markdown() -> str:
    parts = [_INTRO]
    for sec, cls in SECTIONS.items():
        doc = (cls.__doc__ or "").strip() if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "(") else ""
        parts.append(f"## `[{sec}]`\n")
        if doc:
            parts.append(doc + "\n")
        parts.append("| key | type | default | allowed | meaning |\n|---|---|---|---|---|")
        for f in dataclasses.fields(cls):
            default = getattr(cls(), f.name)
            key = live_name(sec, f.name)
            live = "" if key is None else " *(live-editable)*" if key == f.name else f" *(live-editable as `{key}`)*"
            help_ = f.metadata["help"].replace("|", "\\|")
            type_ = "string or list of strings" if f.metadata.get("or_string") else _TYPE[kind(f)]
            parts.append(f"| `{f.name}` | {type_} | `{_value(default)}` | {allowed(f)} | {help_}{live} |")
        parts.append("")
    parts.append(_EDITS)
    return "\n".join(parts).rstrip("\n") + "\n"


def render_template() -> str:
    lines = [
        "# A tuneterm session: every key with its default, commented out.",
        "# Uncomment what you change; docs/session.md explains each key.",
        "# Check the file with `tuneterm validate FILE`.",
        "",
    ]
    for sec, cls in SECTIONS.items():
        lines.append(f"[{sec}]")
        for f in dataclasses.fields(cls):
            default = _value(getattr(cls(), f.name))
            help_ = f.metadata["help"]
            extra = allowed(f).replace("\\|", "|").replace("`", "")
            if extra and extra != "not empty" and not all(c in help_ for c in f.metadata.get("choices", ("\0",))):
                help_ += f" — allowed: {extra}"
            lines.append(f"# {help_}")
            lines.append(f"# {f.name} = {default}")
        lines.append("")
    lines += [
        "# The live-edit log: tuneterm appends the edits applied during a run; replay repeats them.",
        "# [[edits]]",
        "# step = 120",
        "# set = { learning_rate = 2e-5 }",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    targets = [(DOC_PATH, render_markdown()), (TEMPLATE_PATH, render_template())]
    if "--check" in argv:
        stale = [str(p) for p, text in targets if not p.exists() or p.read_text(encoding="utf-8") != text]
        for p in stale:
            print(f"{p} is stale: run python -m tuneterm.session.reference", file=sys.stderr)
        return 1 if stale else 0
    for p, text in targets:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
