"""The round-2 session keys: causal-lm data/evaluation keys, [lora], the new [runtime] keys,
their live edits and the causal-lm metrics."""

from __future__ import annotations

import pytest

from tuneterm.errors import UserError
from tuneterm.session import SessionError, apply_set_values, check_set_values, coerce_value, loads_session
from tuneterm.session.check import metric_problem
from tuneterm.session.schema import editable_path, live_name


def test_defaults_of_the_new_keys():
    s = loads_session("")
    assert s.model.task == "sequence-classification"
    assert (s.data.format, s.data.loss_on, s.data.packing) == ("auto", "completion", False)
    assert (s.evaluation.samples, s.evaluation.max_new_tokens) == (4, 48)
    assert (s.lora.enabled, s.lora.r, s.lora.alpha, s.lora.dropout) == (False, 8, 16.0, 0.05)
    assert s.lora.target_modules == "all-linear" and s.lora.train_base == [] and s.lora.lr_ratio == 1.0
    assert (s.runtime.gradient_checkpointing, s.runtime.precision, s.runtime.compile,
            s.runtime.deterministic, s.runtime.max_wall_s) == (False, "auto", False, False, 0.0)


def test_causal_lm_session_reads():
    s = loads_session('[model]\ntask = "causal-lm"\nsource = "builtin:tiny-llama"\n'
                      '[data]\nformat = "messages"\npacking = true\nloss_on = "all"\n'
                      '[early_stopping]\nenabled = true\nmetric = "val_perplexity"\n'
                      '[lora]\nenabled = true\ntarget_modules = ["q_proj", "v_proj"]\ntrain_base = ["head"]\n')
    assert s.data.format == "messages" and s.lora.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize("text, message", [
    ('[data]\nformat = "chat"\n', "data.format: 'chat' is not one of auto, text, prompt-completion, messages"),
    ('[data]\nloss_on = "prompt"\n', "data.loss_on: 'prompt' is not one of completion, all"),
    ('[runtime]\nprecision = "fp16"\n', "runtime.precision: 'fp16' is not one of auto, fp32, bf16"),
    ('[runtime]\nmax_wall_s = -1\n', "runtime.max_wall_s: -1 is out of range: must be >= 0"),
    ('[lora]\nr = 0\n', "lora.r: 0 is out of range"),
    ('[lora]\ntarget_modules = ""\n', "lora.target_modules: must not be empty"),
    ('[lora]\ntarget_modules = 3\n', "lora.target_modules: expected a list of strings"),
    ('[evaluation]\nmax_new_tokens = 0\n', "evaluation.max_new_tokens: 0 is out of range"),
    ('[early_stopping]\nmetric = "val_perplexity"\n',
     "early_stopping.metric: val_perplexity is not a sequence-classification metric"),
    ('[model]\ntask = "causal-lm"\n[early_stopping]\nmetric = "val_f1"\n',
     "early_stopping.metric: val_f1 is not a causal-lm metric"),
    ('[model]\ntask = "causal-lm"\n[early_stopping]\nmetric = "val_perplexity"\nmode = "max"\n',
     "early_stopping.mode: 'max' does not fit val_perplexity"),
])
def test_bad_values_are_refused(text, message):
    with pytest.raises(SessionError, match=message.replace("(", r"\(")):
        loads_session(text)


def test_causal_lm_metrics_need_no_evaluation_metrics():
    s = loads_session('[model]\ntask = "causal-lm"\n[evaluation]\nmetrics = ["loss"]\n'
                      '[early_stopping]\nenabled = true\nmetric = "val_token_accuracy"\n')
    assert metric_problem(s, "val_perplexity") is None
    assert "not computed" in metric_problem(loads_session('[evaluation]\nmetrics = ["loss"]\n'), "val_f1")


def test_json_data_only_for_causal_lm(tmp_path):
    (tmp_path / "d.json").write_text("[]")
    loads_session('[model]\ntask = "causal-lm"\n[data]\nsource = "d.json"\n', workspace=tmp_path)
    with pytest.raises(SessionError, match=r"expected a \.csv or \.jsonl file"):
        loads_session('[data]\nsource = "d.json"\n', workspace=tmp_path)


def test_lora_live_keys():
    assert editable_path("lora_dropout") == ("lora", "dropout")
    assert editable_path("dropout") == ("hyperparameters", "dropout")
    assert editable_path("r") is None and live_name("lora", "lr_ratio") == "lora_lr_ratio"
    s = loads_session("[lora]\nenabled = true\n")
    assert check_set_values({"lora_dropout": 0.2, "lora_lr_ratio": 16, "train_base": ["head"]}, s) == []
    t = apply_set_values(s, {"lora_dropout": 0.2, "lora_lr_ratio": 16, "train_base": ["head"]})
    assert (t.lora.dropout, t.lora.lr_ratio, t.lora.train_base) == (0.2, 16.0, ["head"])
    assert t.hyperparameters.dropout == s.hyperparameters.dropout
    assert check_set_values({"lora_dropout": 1.0}) == ["lora_dropout: 1.0 is out of range [0, 1)"]
    assert check_set_values({"lora_r": 4})[0].startswith("lora_r: cannot be changed while a run trains")
    assert coerce_value("train_base", "layer.0, head") == ["layer.0", "head"]
    assert coerce_value("train_base", "") == []
    assert coerce_value("lora_lr_ratio", "4") == 4.0
    with pytest.raises(UserError, match="lora_dropout: expected a number"):
        coerce_value("lora_dropout", "lots")


def test_lora_edits_in_the_file_roundtrip():
    from tuneterm.session import dumps_session

    s = loads_session('[lora]\nenabled = true\n[[edits]]\nstep = 3\nset = { lora_dropout = 0.1, train_base = ["embeddings"] }\n')
    assert s.edits[0].set == {"lora_dropout": 0.1, "train_base": ["embeddings"]}
    assert loads_session(dumps_session(s)) == s
    with pytest.raises(SessionError, match=r"edits\[0\].set.lora_r: cannot be changed"):
        loads_session('[[edits]]\nstep = 3\nset = { lora_r = 4 }\n')


def test_train_base_layer_names_are_checked():
    from tuneterm.session import validate_layer_names

    s = loads_session('[lora]\nenabled = true\ntrain_base = ["haed"]\n[[edits]]\nstep = 1\nset = { train_base = ["layer.9"] }\n')
    probs = validate_layer_names(s, ["embeddings", "layer.0", "head"])
    assert [p.field for p in probs] == ["lora.train_base", "edits[0].set.train_base"]
    assert "did you mean 'head'" in probs[0].message


@pytest.mark.parametrize("key, value", [("lora_dropout", "0.2"), ("lora_lr_ratio", "4.0"),
                                        ("train_base", '["layer.0"]')])
def test_lora_knobs_in_the_edit_log_of_a_session_without_lora_are_refused(key, value):
    """`run` refused them at that step (the run failed); `validate` refuses first, with the line."""
    text = f'[session]\nname = "x"\n\n[[edits]]\nstep = 2\nset = {{ {key} = {value} }}\n'
    with pytest.raises(SessionError) as e:
        loads_session(text, "s.toml")
    (p,) = e.value.problems
    assert (p.file, p.line, p.field) == ("s.toml", 6, f"edits[0].set.{key}")
    assert "this session trains no LoRA adapters" in p.message
    assert loads_session(text + "\n[lora]\nenabled = true\n").edits[0].set  # with LoRA: fine
    assert check_set_values({key: 0.2 if key != "train_base" else []}, loads_session("")) == [
        f"{key}: a LoRA knob, but this session trains no LoRA adapters (lora.enabled = false)"]


@pytest.mark.parametrize("template, message", [
    ("{instruction", "expected '}' before end of string"),
    ("{instruction}}", "Single '}' encountered"),
    ("{}: {input}", "a positional field"),
    ("{0}", "a positional field"),
    ("{instruction.upper}", "attribute access"),
])
def test_a_prompt_template_that_cannot_format_is_refused(template, message):
    """`run` refused it when it read the first record; `validate` refuses it with its line."""
    text = f'[model]\ntask = "causal-lm"\n\n[data]\nprompt_template = "{template}"\n'
    with pytest.raises(SessionError) as e:
        loads_session(text, "s.toml")
    (p,) = e.value.problems
    assert (p.line, p.field) == (5, "data.prompt_template") and message in p.message, p.message
    assert loads_session('[data]\nprompt_template = "{instruction}\\n\\n{input[0]} {{literal}}"\n')
