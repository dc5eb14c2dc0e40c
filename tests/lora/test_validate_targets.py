"""`[lora] target_modules` is checked against the model by `validate` (and so by `run`'s and
the runner's pre-flight), on its line: one name as a string, a typo, a tied output layer."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_helpers import run_cli
from tiny_sessions import tiny_session_toml


def _session(workspace: Path, targets: str, model: str = "builtin:tiny-bert") -> Path:
    text = tiny_session_toml("t", seed=3, steps=4)
    if model != "builtin:tiny-bert":
        text = text.replace('source = "builtin:tiny-bert"', f'source = "{model}"\ntask = "causal-lm"')
    path = workspace / "sessions" / "t.toml"
    path.write_text(text + f"\n[lora]\nenabled = true\nr = 4\ntarget_modules = {targets}\n")
    return path


def _line(path: Path) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith("target_modules"))


def test_one_module_name_as_a_string_validates(workspace, capsys):
    s = _session(workspace, '"query"')
    code, out, err = run_cli(["validate", str(s)], capsys)
    assert (code, out, err) == (0, f"{s}: ok\n", "")


@pytest.mark.parametrize("targets,model,message", [
    ('"qury"', "builtin:tiny-bert", "no linear layer named 'qury' in this model; did you mean 'query'?"),
    ('["c_attn", "lm_head"]', "builtin:tiny-gpt2", "'lm_head' is tied to transformer.wte.weight (one tensor)"),
])
def test_a_target_the_run_would_refuse_is_refused_by_validate_on_its_line(workspace, capsys, targets, model,
                                                                         message):
    s = _session(workspace, targets, model)
    for verb in ("validate", "run"):
        code, out, err = run_cli([verb, str(s)], capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert err.removeprefix("tuneterm: error: ").startswith(f"{s}:{_line(s)}: lora.target_modules: {message}"), err
    assert not list((workspace / "runs").iterdir())
