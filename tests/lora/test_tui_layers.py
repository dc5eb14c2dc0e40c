"""The TUI's Layers tab: adapter and base parameters of LoRA groups (no torch here)."""

from __future__ import annotations

from tuneterm.tui.panels import layer_state

ROW = {"name": "layer.1", "params": 58176, "frozen": False, "trainable": 8192, "adapter_params": 8192,
       "base_params": 49984, "train_base": False}


def test_lora_rows_say_what_trains():
    assert layer_state(ROW, None) == ("adapters · base 50.0k frozen", 8192, 8192)
    assert layer_state({**ROW, "train_base": True}, None) == ("adapters + base 50.0k", 8192, 58176)
    assert layer_state(ROW, ["layer.1"])[0] == "adapters + base 50.0k"  # a live `set train_base`
    assert layer_state({**ROW, "train_base": True}, [])[2] == 8192  # ... and taking it back
    assert layer_state({**ROW, "frozen": True}, ["layer.1"]) == ("frozen", 8192, 0)


def test_full_fine_tuning_rows_unchanged():
    row = {"name": "head", "params": 130, "frozen": False}
    assert layer_state(row, None) == ("trainable", 130, 130)
    assert layer_state({**row, "frozen": True}, None) == ("frozen", 130, 0)
