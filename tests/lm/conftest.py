"""Shared bits of the causal-LM tests: the tiny models' tokenizer, prepared for LM use."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tok():
    from tuneterm.engine import lm_data as LM
    from tuneterm.engine.models import load_tokenizer

    t = load_tokenizer("builtin:tiny-llama")
    LM.prepare_tokenizer(t)
    return t
