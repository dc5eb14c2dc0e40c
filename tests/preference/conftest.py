"""The preference tests' fixtures; builders in pref_helpers.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tok():
    from tuneterm.engine import lm_data as LM
    from tuneterm.engine.models import load_tokenizer

    t = load_tokenizer("builtin:tiny-llama")
    LM.prepare_tokenizer(t)
    return t
