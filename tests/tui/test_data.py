"""RunView folds run-directory rows; guidance; replay comparison."""

from tuneterm.tui.data import RunView, compare_metrics, fmt_best, fmt_eta, fmt_progress, read_jsonl


def train(step, loss):
    return {"kind": "train", "step": step, "epoch": step / 10, "loss": loss, "lr": 1e-4, "time": step * 1.0}


def ev(step, val):
    return {"kind": "eval", "step": step, "val_loss": val, "val_accuracy": 0.8, "time": 0.0}


def test_edits_update_knobs_layers_and_timeline():
    v = RunView()
    v.load_session_toml({"hyperparameters": {"learning_rate": 5e-5, "batch_size": 16},
                         "early_stopping": {"patience": 3}})
    v.set_layers([{"name": "embeddings", "params": 10, "frozen": True},
                  {"name": "layer.0", "params": 5, "frozen": False}])
    v.add_event({"kind": "edit", "step": 12, "edit": {"set": {"learning_rate": 2e-5}}})
    v.add_event({"kind": "edit", "step": 15, "edit": {"unfreeze": ["embeddings"], "freeze": ["layer.0"]}})
    assert v.knobs["learning_rate"] == 2e-5 and v.knobs["patience"] == 3
    assert [x["frozen"] for x in v.layers] == [False, True]
    assert v.trainable() == (10, 15)
    assert [(e.step, e.kind) for e in v.timeline] == [(12, "edit"), (15, "edit")]
    assert "learning_rate=2e-05" in v.timeline[0].text


def test_session_toml_edit_log_applies():
    v = RunView()
    v.load_session_toml({"hyperparameters": {"learning_rate": 5e-5},
                         "edits": [{"step": 3, "set": {"learning_rate": 1e-5}}]})
    assert v.knobs["learning_rate"] == 1e-5


def test_overfitting_advice_only_when_val_rises_and_train_falls():
    v = RunView()
    for s in range(1, 61):
        v.add_metric(train(s, 2.0 - s / 40))
        if s % 10 == 0:
            v.add_metric(ev(s, 1.0 if s <= 30 else 1.0 + (s - 30) / 100))
    advice = v.guidance()
    assert advice and "weight_decay" in advice and "dropout" in advice and "freeze" in advice
    v2 = RunView()
    for s in range(1, 61):
        v2.add_metric(train(s, 2.0 - s / 40))
        if s % 10 == 0:
            v2.add_metric(ev(s, 1.0 - s / 100))
    assert v2.guidance() is None


def test_compare_metrics_ignores_wall_clock_and_finds_differences():
    a = [train(1, 0.5), train(2, 0.4), ev(2, 0.3)]
    b = [dict(r, time=99.0) for r in a]
    assert compare_metrics(a, b).match
    c = [train(1, 0.5), train(2, 0.41), ev(2, 0.3)]
    cmp = compare_metrics(a, c)
    assert not cmp.match and "step 2" in cmp.detail and "loss" in cmp.detail
    assert not compare_metrics(a, a[:2]).match


def test_formatting():
    assert fmt_eta(3725) == "1h02m" and fmt_eta(None) == ""
    assert fmt_best({"name": "val_loss", "value": 0.36461}) == "val_loss 0.365"
    assert fmt_progress({"step": 5, "total_steps": 40, "state": "running", "epoch": 0.5, "eta_s": 30}) == "5/40 ep 0.5 30s"


def test_read_jsonl_skips_torn_last_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert read_jsonl(p) == [{"a": 1}, {"a": 2}]


def test_a_lora_causal_lm_run_shows_its_lora_knobs_and_token_accuracy():
    v = RunView()
    v.load_session_toml({"model": {"task": "causal-lm"}, "lora": {"enabled": True, "dropout": 0.1},
                         "edits": [{"step": 3, "set": {"lora_lr_ratio": 16.0}}]})
    assert v.knob_keys[-2:] == ("lora_dropout", "lora_lr_ratio")
    assert v.knobs["lora_dropout"] == 0.1 and v.knobs["lora_lr_ratio"] == 16.0  # the edit log applied
    v.add_metric({"kind": "eval", "step": 4, "val_loss": 2.0, "val_perplexity": 7.39, "val_token_accuracy": 0.42})
    assert v.val_accuracy.last == 0.42  # the accuracy chart plots the token accuracy
    assert "perplexity 7.39" in v.timeline[-1].text and "token_accuracy 0.42" in v.timeline[-1].text
    plain = RunView()
    plain.load_session_toml({"hyperparameters": {}})
    assert "lora_dropout" not in plain.knob_keys and plain.accuracy_key == "val_accuracy"


def test_lora_knob_help_and_checks_are_the_schemas():
    from tuneterm.tui.knobs import check_knob, knob_help

    assert "adapters' input" in knob_help("lora_dropout") and "range [0.0, 1.0)" in knob_help("lora_dropout")
    assert check_knob("lora_dropout", "0.2") == (0.2, None)
    value, problem = check_knob("lora_dropout", "1.5")
    assert value is None and "lora_dropout" in problem


def test_the_status_line_drops_best_then_epoch_when_narrow():
    from tuneterm.tui.panels import status_line

    v = RunView()
    v.add_metric(train(40, 0.5))
    s = {"name": "bbc-minilm", "state": "running", "step": 40, "total_steps": 150, "epoch": 0.8,
         "best_metric": {"name": "val_loss", "value": 0.31}, "eta_s": 95}
    wide = status_line(v, s, 200).plain
    assert wide == "bbc-minilm · running · step 40/150 · epoch 4 · loss 0.5 · best val_loss 0.31 · ETA 1m35s"
    assert "best" not in status_line(v, s, 70).plain and "epoch" in status_line(v, s, 70).plain
    narrow = status_line(v, s, 55).plain
    assert "best" not in narrow and "epoch" not in narrow and narrow.startswith("bbc-minilm · running · step 40/150")
