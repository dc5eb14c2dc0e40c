"""Builders for the LoRA tests: tiny random models (a few ms a step) and [lora] sessions."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tokenizer():
    from tuneterm.engine.models import load_tokenizer

    return load_tokenizer("builtin:tiny-bert")


def lora_session(*, model: str = "builtin:tiny-bert", task: str = "sequence-classification", r: int = 4,
                 alpha: float = 8.0, dropout: float = 0.0, targets="all-linear", seed: int = 3, **lora):
    from tuneterm.session.schema import Session

    s = Session()
    s.session.seed = seed
    s.model.source, s.model.task = model, task
    s.lora.enabled = True
    s.lora.r, s.lora.alpha, s.lora.dropout, s.lora.target_modules = r, alpha, dropout, targets
    for k, v in lora.items():
        setattr(s.lora, k, v)
    return s


def base_model(source: str, tokenizer, *, causal: bool = False, seed: int = 3, tie: bool | None = None):
    """A tiny random model: a 3-label classifier, or (``causal``) a language model."""
    from transformers import AutoModelForCausalLM

    from tuneterm.engine.models import _tiny_config, build_model

    if not causal:
        return build_model(source, 3, tokenizer=tokenizer, seed=seed)
    config = _tiny_config(source, 2, len(tokenizer), tokenizer.pad_token_id)
    if tie is not None:
        config.tie_word_embeddings = tie
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


@pytest.fixture
def make_session():
    return lora_session


@pytest.fixture
def make_base(tokenizer):
    return lambda source, **kw: base_model(source, tokenizer, **kw)
