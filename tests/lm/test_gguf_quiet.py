"""The GGUF conversion of builtin:smollm2-135m draws no tqdm bar on the terminal: transformers'
reader calls tqdm itself, and ``quiet_gguf_reader`` gives it a silent one for the duration."""

from __future__ import annotations

import pytest

from tuneterm.engine.smollm2 import quiet_gguf_reader


def test_the_gguf_readers_bar_is_silent_inside_and_restored_after(capfd):
    reader = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    bar = reader.tqdm
    with quiet_gguf_reader():
        assert list(reader.tqdm(range(50), desc="Converting and de-quantizing GGUF tensors...")) == list(range(50))
    assert "Converting" not in capfd.readouterr().err
    assert reader.tqdm is bar
    list(reader.tqdm(range(50), desc="Converting and de-quantizing GGUF tensors..."))  # the real one draws
    assert "Converting" in capfd.readouterr().err
