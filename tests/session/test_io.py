"""Loading, checking and writing session files (no torch)."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import tomllib
from pathlib import Path

import pytest

from tuneterm.errors import UserError
from tuneterm.session import (
    EDITABLE,
    SECTIONS,
    Edit,
    Problem,
    Session,
    SessionError,
    apply_set_values,
    check_session_file,
    check_set_values,
    coerce_value,
    dumps_session,
    load_session,
    loads_session,
    save_session,
    validate_layer_names,
)
from tuneterm.session.check import FIELDS, check_value, kind
from tuneterm.session.locate import Locator
from tuneterm.session.tasks import TASK_TABLE

REPO = Path(__file__).resolve().parents[2]


# -- loading ---------------------------------------------------------------------------

def test_defaults_from_an_empty_file():
    assert loads_session("") == Session()


def test_int_is_fine_where_a_float_is_expected():
    s = loads_session("[hyperparameters]\nlearning_rate = 1\nepochs = 2\n")
    assert s.hyperparameters.learning_rate == 1.0 and isinstance(s.hyperparameters.learning_rate, float)
    assert isinstance(s.hyperparameters.epochs, float)


def test_edits_are_built():
    s = loads_session('[[edits]]\nstep = 0\nset = { learning_rate = 1, batch_size = 8 }\n'
                      '[[edits]]\nstep = 0\nfreeze = ["embeddings"]\n'
                      '[[edits]]\nstep = 7\nunfreeze = ["embeddings"]\n')
    assert s.edits == [Edit(0, set={"learning_rate": 1.0, "batch_size": 8}), Edit(0, freeze=["embeddings"]),
                       Edit(7, unfreeze=["embeddings"])]
    assert isinstance(s.edits[0].set["learning_rate"], float)


def test_session_error_is_a_user_error_with_every_problem():
    with pytest.raises(SessionError) as ei:
        loads_session("[hyperparameters]\ndropout = 1.5\nbatch_size = 0\n", filename="x.toml")
    e = ei.value
    assert isinstance(e, UserError) and e.exit_code == 2
    assert str(e) == "x.toml:2: hyperparameters.dropout: 1.5 is out of range [0, 1) (and 1 more)"
    assert e.problems[1] == Problem("x.toml", 3, "hyperparameters.batch_size", "0 is out of range [1, 65536]")


def test_load_session_file(tmp_path: Path):
    p = tmp_path / "s.toml"
    p.write_text('[session]\nname = "abc"\n')
    assert load_session(p).name == "abc"
    p.write_text('[session]\nname = ""\n')
    with pytest.raises(SessionError, match=r"s\.toml:2: session\.name: "):
        load_session(p)


def test_bom_is_accepted():
    assert loads_session('\ufeff[session]\nname = "bom"\n').name == "bom"


def test_syntax_error_at_end_of_document():
    _, problems = check_session_file_text("[session]\nname =")
    assert problems[0].field == "syntax" and problems[0].line == 2


def check_session_file_text(text: str):
    from tuneterm.session import check_session_text
    return check_session_text(text, "t.toml")


@pytest.mark.parametrize("toml_value", ["nan", "+nan", "-nan", "inf", "+inf", "-inf"])
@pytest.mark.parametrize("key", ["learning_rate", "batch_size", "weight_decay"])
def test_non_finite_is_rejected_everywhere(key: str, toml_value: str):
    with pytest.raises(SessionError, match="is not allowed"):
        loads_session(f"[hyperparameters]\n{key} = {toml_value}\n")
    with pytest.raises(SessionError, match="is not allowed"):
        loads_session(f"[[edits]]\nstep = 1\nset = {{ {key} = {toml_value} }}\n")


@pytest.mark.parametrize("section,key", [(s, k) for s, fs in FIELDS.items() for k, f in fs.items()
                                         if kind(f) == "int" and f.metadata.get("min", -1) >= 0])
def test_bool_is_not_an_int(section: str, key: str):
    with pytest.raises(SessionError, match="expected an integer, got a boolean"):
        loads_session(f"[{section}]\n{key} = true\n")


def test_every_default_passes_its_own_check():
    for sec, fields in FIELDS.items():
        for name, f in fields.items():
            default = getattr(SECTIONS[sec](), name)
            assert check_value(f, default)[1] is None, (sec, name, default)


def test_every_field_has_help_and_a_known_kind():
    for fields in FIELDS.values():
        for f in fields.values():
            assert f.metadata.get("help"), f.name
            assert kind(f) in ("int", "float", "bool", "str", "list"), f.name


def test_editable_keys_exist():
    for key, sec in EDITABLE.items():
        assert key in FIELDS[sec]


def test_epochs_zero_is_fine_with_max_steps():
    s = loads_session("[hyperparameters]\nepochs = 0\nmax_steps = 100\n")
    assert s.hyperparameters.max_steps == 100


def test_mode_may_be_empty_or_consistent():
    loads_session('[early_stopping]\nmetric = "val_f1"\nmode = "max"\n')
    loads_session('[early_stopping]\nmetric = "val_loss"\nmode = "min"\n')
    with pytest.raises(SessionError, match="early_stopping.mode: 'max' does not fit val_loss"):
        loads_session('[early_stopping]\nmetric = "val_loss"\nmode = "max"\n')


def test_edits_in_the_same_step_are_fine():
    loads_session('[[edits]]\nstep = 5\nfreeze = ["a"]\n[[edits]]\nstep = 5\nunfreeze = ["a"]\n')


def test_inline_array_of_edits_locates_the_key():
    with pytest.raises(SessionError) as ei:
        loads_session('[session]\nname = "x"\n\nedits = [\n  { step = 1, set = { dropout = 3.0 } },\n]\n')
    # a top-level key after [session] belongs to [session]: an unknown key there
    assert ei.value.problems[0].field == "session.edits"


# -- sources and the workspace ---------------------------------------------------------

@pytest.fixture
def ws(tmp_path: Path) -> Path:
    w = tmp_path / "ws"
    (w / "data").mkdir(parents=True)
    (w / "data" / "train.csv").write_text("text,label\na,b\n")
    (w / "data" / "val.jsonl").write_text('{"text": "a", "label": "b"}\n')
    (w / "models" / "mine").mkdir(parents=True)
    return w


def test_local_sources_inside_the_workspace(ws: Path):
    s = loads_session('[model]\nsource = "models/mine"\n[data]\nsource = "data/train.csv"\n'
                      'validation = "./data/val.jsonl"\n', workspace=ws)
    assert s.data.source == "data/train.csv"
    loads_session(f'[data]\nsource = "{ws}/data/train.csv"\n', workspace=ws)


def test_hub_id_is_not_a_path(ws: Path):
    assert loads_session('[model]\nsource = "org/some-model.v2"\n', workspace=ws).model.source == "org/some-model.v2"
    with pytest.raises(SessionError, match="does not exist"):
        loads_session('[model]\nsource = "./org/some-model"\n', workspace=ws)


def test_symlink_out_of_the_workspace_is_rejected(ws: Path, tmp_path: Path):
    outside = tmp_path / "outside.csv"
    outside.write_text("text,label\n")
    os.symlink(outside, ws / "data" / "link.csv")
    with pytest.raises(SessionError, match="outside the workspace"):
        loads_session('[data]\nsource = "data/link.csv"\n', workspace=ws)


def test_data_source_must_be_a_file(ws: Path):
    (ws / "data" / "dir.csv").mkdir()
    with pytest.raises(SessionError, match="is not a file"):
        loads_session('[data]\nsource = "data/dir.csv"\n', workspace=ws)


def test_without_a_workspace_paths_are_only_checked_for_their_suffix():
    loads_session('[data]\nsource = "../anywhere.csv"\n')
    with pytest.raises(SessionError, match="expected a .csv or .jsonl file"):
        loads_session('[data]\nsource = "../anywhere.txt"\n')


# -- live edits ------------------------------------------------------------------------

def test_check_set_values():
    assert check_set_values({"learning_rate": -1}) == ["learning_rate: -1 is out of range (0, 1]"]
    assert check_set_values({"learning_rate": 2e-5, "batch_size": 32, "schedule": "cosine"}) == []
    assert check_set_values({"dropout": 1.0}) == ["dropout: 1.0 is out of range [0, 1)"]
    assert check_set_values({"dropout": float("nan")}) == ["dropout: nan is not allowed (use a finite number)"]
    assert check_set_values({"batch_size": True}) == ["batch_size: expected an integer, got a boolean true"]
    assert check_set_values({"adam_beta1": 0.5})[0].startswith("adam_beta1: cannot be changed while a run trains")
    assert check_set_values({"learnig_rate": 1e-4}) == [
        "learnig_rate: cannot be changed while a run trains; did you mean 'learning_rate'?"]
    assert check_set_values({}) != []


def test_check_set_values_with_the_session():
    s = loads_session("[hyperparameters]\nmax_steps = 100\nepochs = 0\n")
    assert check_set_values({"max_steps": 0}, s) == ["epochs: epochs and max_steps are both 0; set one of them > 0"]
    assert check_set_values({"max_steps": 0, "epochs": 2}, s) == []
    assert check_set_values({"warmup_steps": 100}, s)[0].startswith("warmup_steps: 100 warmup steps")


def test_apply_set_values_copies():
    s = Session()
    t = apply_set_values(s, {"learning_rate": 1, "patience": 7})
    assert t.hyperparameters.learning_rate == 1.0 and t.early_stopping.patience == 7
    assert s == Session()


@pytest.mark.parametrize("key,text,value", [
    ("learning_rate", "2e-5", 2e-5), ("learning_rate", " 0.001 ", 0.001), ("batch_size", "32", 32),
    ("max_steps", "1_000", 1000), ("schedule", "cosine", "cosine"), ("epochs", "3", 3.0),
    ("patience", "5", 5), ("train_base", "layer.0, layer.1", ["layer.0", "layer.1"]),
    ("train_base", '["layer.29"]', ["layer.29"]), ("train_base", "", []), ("train_base", "[]", []),
])
def test_coerce_value(key: str, text: str, value):
    v = coerce_value(key, text)
    assert v == value and type(v) is type(value)


@pytest.mark.parametrize("key,text,msg", [
    ("batch_size", "16.5", "batch_size: expected an integer, got '16.5'"),
    ("learning_rate", "fast", "learning_rate: expected a number, got 'fast'"),
    ("learning_rate", "nan", "learning_rate: nan is not allowed (use a finite number)"),
    ("dropout", "inf", "dropout: inf is not allowed (use a finite number)"),
    ("lr", "1", "lr: cannot be changed while a run trains; editable: "),
    ("seed", "1", "seed: cannot be changed while a run trains"),
    ("train_base", '["layer.0", 3]', "train_base: expected layer names, as layer.0,layer.1 or"),
    ("train_base", '["layer.0"', "train_base: expected layer names"),
])
def test_coerce_value_errors(key: str, text: str, msg: str):
    with pytest.raises(UserError) as ei:
        coerce_value(key, text)
    assert str(ei.value).startswith(msg)


# -- layer names -------------------------------------------------------------------------

LAYERS = ["embeddings", "layer.0", "layer.1", "head"]


def test_validate_layer_names():
    text = ('[freeze]\nlayers = [\n  "embeddings",\n  "layers.1",\n]\n\n'
            '[[edits]]\nstep = 3\nunfreeze = ["layer.0", "hed"]\n')
    s = loads_session(text, filename="f.toml")
    problems = validate_layer_names(s, LAYERS)
    assert [str(p) for p in problems] == [
        "f.toml:4: freeze.layers: unknown layer 'layers.1'; did you mean 'layer.1'?",
        "f.toml:9: edits[0].unfreeze: unknown layer 'hed'; did you mean 'head'?",
    ]
    assert validate_layer_names(s, LAYERS + ["layers.1", "hed"]) == []


def test_validate_layer_names_lists_the_layers_when_nothing_is_close():
    s = loads_session('[freeze]\nlayers = ["transformer"]\n')
    (p,) = validate_layer_names(s, LAYERS)
    assert p.line == 2 and "layers: embeddings, layer.0, layer.1, head" in p.message


def test_validate_layer_names_on_a_session_built_in_code():
    s = Session()
    s.freeze.layers = ["nope"]
    (p,) = validate_layer_names(s, LAYERS)
    assert p.file == "<session>" and p.line == 1


# -- writing ---------------------------------------------------------------------------

def _random_session(rng: random.Random) -> Session:
    """A valid session drawn from the schema's metadata (a poor man's hypothesis)."""
    s = Session()
    for sec, fields in FIELDS.items():
        obj = getattr(s, sec)
        for name, f in fields.items():
            m, k = f.metadata, kind(f)
            if rng.random() < 0.3:
                continue
            if "choices" in m:
                v = rng.choice(m["choices"])
            elif "item_choices" in m:
                v = rng.sample(list(m["item_choices"]), rng.randint(1, len(m["item_choices"])))
            elif k == "list":
                v = [rng.choice(["embeddings", "layer.0", "ünïcödé", 'q"uote', "back\\slash"])
                     for _ in range(rng.randint(0, 3))]
            elif k == "bool":
                v = rng.random() < 0.5
            elif k == "str" and name in ("source", "validation", "name"):
                continue
            elif k == "str":
                v = rng.choice(["plain", "tab\tand\nnewline", "emoji 🎛", "'single' \"double\"", "\x01\x7f"])
            else:
                lo = m.get("min", 0)
                hi = m.get("max", 10**6 if k == "int" else 1e6)
                if k == "int":
                    v = rng.randint(lo + bool(m.get("min_open")), hi - bool(m.get("max_open")))
                else:
                    v = rng.choice([lo, hi, rng.uniform(lo, hi), 10 ** rng.uniform(-12, math.log10(hi or 1))])
                    v = min(max(v, lo), hi)
                    if (m.get("min_open") and v <= lo) or (m.get("max_open") and v >= hi):
                        v = (lo + hi) / 2
                    v = float(v)
            setattr(obj, name, v)
    s.session.name = rng.choice(["a", "bbc-minilm", "x.y_z-1"])
    step = 0
    for _ in range(rng.randint(0, 4)):
        step += rng.randint(0, 50)
        keys = rng.sample(list(EDITABLE), rng.randint(0, 3))
        values = {k: getattr(getattr(s, EDITABLE[k]), k) for k in keys}
        s.edits.append(Edit(step, set=values, freeze=["layer.0"] if rng.random() < 0.3 else [],
                            unfreeze=["embeddings"] if rng.random() < 0.3 or not values else [],
                            stop=rng.random() < 0.1))
    return s


def _roundtrip(s: Session) -> Session:
    text = dumps_session(s)
    tomllib.loads(text)  # valid TOML
    return loads_session(text)


@pytest.mark.parametrize("seed", range(150))
def test_roundtrip_random(seed: int):
    s = _random_session(random.Random(seed))
    # cross-field constraints are not the point here; keep them satisfied
    s.hyperparameters.warmup_ratio = 0.0 if s.hyperparameters.warmup_steps else s.hyperparameters.warmup_ratio % 1
    s.hyperparameters.warmup_steps = 0 if s.hyperparameters.max_steps else s.hyperparameters.warmup_steps
    s.early_stopping.mode = ""
    s.early_stopping.metric = "val_loss"
    s.evaluation.metrics = ["loss", *[m for m in s.evaluation.metrics if m != "loss"]]
    if s.hyperparameters.epochs == 0:
        s.hyperparameters.epochs = 1.0
    s.lora.enabled = s.lora.enabled or any(EDITABLE[k] == "lora" for e in s.edits for k in e.set)  # LoRA knobs
    if any(EDITABLE[k] == "preference" for e in s.edits for k in e.set):  # preference knobs: that task
        s.model.task = "preference"
    if s.data.format not in TASK_TABLE[s.model.task].formats:
        s.data.format = "auto"
    s.preference.loss, s.preference.reference = "dpo", "precompute"  # a loss and its reference agree
    for e in s.edits:  # edits re-set the (now consistent) session values
        e.set = {k: getattr(getattr(s, EDITABLE[k]), k) for k in e.set}
    assert _roundtrip(s) == s


@pytest.mark.parametrize("path", sorted((REPO / "sessions").glob("*.toml")), ids=lambda p: p.name)
def test_roundtrip_examples(path: Path):
    s = load_session(path)
    assert _roundtrip(s) == s


def test_dump_layout():
    s = Session()
    s.edits = [Edit(120, set={"learning_rate": 2e-5}), Edit(300, unfreeze=["layer.1"], freeze=["head"])]
    text = dumps_session(s)
    heads = [ln for ln in text.splitlines() if ln.startswith("[")]
    assert heads == [f"[{sec}]" for sec in SECTIONS] + ["[[edits]]", "[[edits]]"]
    assert text.endswith('[[edits]]\nstep = 120\nset = { learning_rate = 2e-05 }\n\n'
                         '[[edits]]\nstep = 300\nfreeze = ["head"]\nunfreeze = ["layer.1"]\n')
    assert 'metrics = ["loss", "accuracy", "f1"]' in text


def test_stop_edit_round_trips():
    s = Session()
    s.edits = [Edit(5, set={"dropout": 0.2}), Edit(9, stop=True)]
    assert dumps_session(s).endswith("[[edits]]\nstep = 9\nstop = true\n")
    assert _roundtrip(s) == s
    with pytest.raises(SessionError, match=r"edits\[0\]\.stop: expected true or false"):
        loads_session("[[edits]]\nstep = 1\nstop = 1\n")


def test_dump_normalises_ints_in_float_fields():
    s = Session()
    s.hyperparameters.learning_rate = 1
    s.edits = [Edit(1, set={"dropout": 0})]
    t = _roundtrip(s)
    assert t.hyperparameters.learning_rate == 1.0 and isinstance(t.edits[0].set["dropout"], float)


def test_dump_refuses_non_finite():
    s = Session()
    s.hyperparameters.learning_rate = float("nan")
    with pytest.raises(ValueError):
        dumps_session(s)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path):
    p = tmp_path / "s.toml"
    p.write_text("old")
    s = Session()
    s.session.name = "saved"
    save_session(s, p)
    assert load_session(p) == s
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.toml"]


def test_save_refuses_non_finite_before_touching_the_file(tmp_path: Path):
    p = tmp_path / "s.toml"
    p.write_text("old")
    s = Session()
    s.hyperparameters.dropout = float("inf")
    with pytest.raises(ValueError):
        save_session(s, p)
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.toml"]


def test_a_save_that_fails_midway_through_writing_keeps_the_old_file(tmp_path: Path, monkeypatch):
    # The disk fills up after half of the text reached the temporary file.
    p = tmp_path / "s.toml"
    p.write_text("old")
    real_fdopen, partial = os.fdopen, []

    class HalfThenFull:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()
            return False

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            self.fh.flush()
            partial.append(os.fstat(self.fh.fileno()).st_size)
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.fh, name)

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: HalfThenFull(real_fdopen(fd, *a, **k)))
    s = Session()
    s.session.name = "new"
    with pytest.raises(OSError, match="No space left"):
        save_session(s, p)
    assert partial and partial[0] > 0  # it did fail midway, with bytes written
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.toml"]


def test_dataclass_fields_are_round_tripped_completely():
    # every schema field appears in the dump (a frozen session does not lean on defaults)
    text = dumps_session(Session())
    for sec, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f"\n{f.name} = " in text, f.name


# -- the locator -----------------------------------------------------------------------

def test_locator_paths():
    text = '''# a = 1
[session]
name = "x = y"  # b = 2
description = """
seed = 3
"""
seed = 1

[hyperparameters]
"learning_rate" = 5e-5
data.max_length = 3

[[edits]]
step = 1
set = { learning_rate = 2e-5, dropout = 0.2 }

[[edits]]
step = 2

[edits.set]
dropout = 0.3
'''
    loc = Locator(text)
    assert loc.line("session") == 2
    assert loc.line("session.name") == 3
    assert loc.line("session.description") == 4
    assert loc.line("session.seed") == 7
    assert loc.line("hyperparameters.learning_rate") == 10
    assert loc.line("hyperparameters.data.max_length") == 11
    assert loc.line("edits[0]") == 13
    assert loc.line("edits[0].set.dropout") == 15
    assert loc.line("edits[1].step") == 18
    assert loc.line("edits[1].set") == 20
    assert loc.line("edits[1].set.dropout") == 21
    assert loc.line("edits[1].set.learning_rate") == 20  # falls back to the table
    assert loc.line("edits[7]") == 13  # falls back to the first [[edits]]
    assert loc.line("nowhere.at.all") == 1


def test_locator_survives_garbage():
    for text in ['[a\nb = "unterminated\n', "x = [1, 2,\n", "= = =", "[[", 'k = { a = 1\nb = 2\n', '"""']:
        Locator(text).line("a.b")
    assert Locator('k = { a = 1\nb = 2\n').line("b") == 2


def test_edits_are_checked_in_sequence():
    text = ('[hyperparameters]\nmax_steps = 100\nepochs = 0\n\n[[edits]]\nstep = 10\nset = { max_steps = 200 }\n\n'
            '[[edits]]\nstep = 20\nset = { max_steps = 0 }\n')
    with pytest.raises(SessionError) as ei:
        loads_session(text)
    (p,) = ei.value.problems
    assert (p.line, p.field) == (11, "edits[1].set")
    assert p.message == "after this edit: epochs and max_steps are both 0; set one of them > 0"
    loads_session(text.replace("max_steps = 0 }", "max_steps = 0, epochs = 1 }"))


def test_validate_layer_names_refuses_freezing_everything():
    s = loads_session('[freeze]\nlayers = ["embeddings", "layer.0", "layer.1", "head"]\n')
    (p,) = validate_layer_names(s, LAYERS)
    assert (p.line, p.field) == (2, "freeze.layers") and "nothing would train" in p.message


def test_huge_integers_and_deep_nesting_are_problems_not_crashes():
    with pytest.raises(SessionError, match=r"max_steps: 99999999999999999999 is too large"):
        loads_session("[hyperparameters]\nmax_steps = 99999999999999999999\n")
    with pytest.raises(SessionError, match="syntax"):
        loads_session("x = " + "[" * 100000)
    Locator("x = " + "[" * 100000 + "]" * 100000)
