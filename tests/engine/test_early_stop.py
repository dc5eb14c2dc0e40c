"""EarlyStopping and TrainState: the pieces of a checkpoint that are not tensors."""

from __future__ import annotations

import json

import pytest

from tuneterm.engine.early_stop import EarlyStopping
from tuneterm.engine.state import FIELDS, TrainState
from tuneterm.session.schema import Hyperparameters


def test_min_mode_counts_evaluations_without_improvement_and_resets_on_a_new_best():
    es = EarlyStopping(metric="val_loss", mode="min", patience=2, min_delta=0.1)
    assert es.update(1.0, 4) and (es.best, es.best_step, es.bad_evals) == (1.0, 4, 0)
    assert not es.update(0.95, 8)  # better, but not by min_delta
    assert es.bad_evals == 1 and not es.should_stop
    assert es.update(0.85, 12) and es.bad_evals == 0 and es.best_step == 12
    assert not es.update(0.9, 16) and not es.update(0.86, 20)
    assert es.should_stop and es.best == 0.85


def test_max_mode_and_a_disabled_stopper_that_still_tracks_the_best():
    es = EarlyStopping(metric="val_accuracy", mode="max", patience=1, enabled=False)
    es.update(0.5, 1)
    assert not es.update(0.4, 2)
    assert es.bad_evals == 1 and not es.should_stop  # disabled: never stops
    assert es.update(0.6, 3) and es.best == 0.6


def test_mode_comes_from_the_task_unless_the_session_gives_one():
    from tuneterm.session.schema import EarlyStopping as Spec

    assert EarlyStopping.of(Spec(metric="val_f1"), "max").mode == "max"
    assert EarlyStopping.of(Spec(metric="val_f1", mode="min"), "max").mode == "min"
    with pytest.raises(ValueError):
        EarlyStopping(metric="val_loss", mode="up", patience=1)


def _state() -> TrainState:
    es = EarlyStopping(metric="val_loss", mode="min", patience=3)
    es.update(0.7, 8)
    es.update(0.8, 12)
    return TrainState(step=12, epoch=1, cursor=40, samples_seen=136, total_steps=24, edits_applied=2,
                      hyperparameters=Hyperparameters(learning_rate=1e-3), frozen=["embeddings"],
                      early_stopping=es, last_eval_step=12, kernels="torch", dtype="float32",
                      optimizer={"kind": "torch"})


def test_train_state_round_trips_through_json_with_every_field():
    st = _state()
    d = json.loads(json.dumps(st.to_json()))
    assert tuple(d) == FIELDS
    fresh = TrainState(step=0, epoch=0, cursor=0, samples_seen=0, total_steps=0, edits_applied=0,
                       hyperparameters=Hyperparameters(), frozen=[],
                       early_stopping=EarlyStopping(metric="val_loss", mode="min", patience=3), last_eval_step=-1,
                       kernels="torch", dtype="float32")
    fresh.load_json(d)
    assert fresh.to_json() == st.to_json()
    assert fresh.early_stopping.best == 0.7 and fresh.early_stopping.bad_evals == 1
    assert fresh.hyperparameters.learning_rate == 1e-3


def test_a_state_missing_a_field_is_refused_naming_it():
    d = _state().to_json()
    del d["cursor"]
    with pytest.raises(ValueError, match="cursor"):
        _state().load_json(d)
    d = _state().to_json()
    del d["early_stopping"]["bad_evals"]
    with pytest.raises(ValueError, match="bad_evals"):
        _state().load_json(d)


def test_a_round1_state_loads_into_the_same_fields():
    # state.json as the round-1 trainer wrote it (commit 97884c6)
    round1 = {"format": 1, "step": 8, "epoch": 0, "cursor": 64, "samples_seen": 64, "total_steps": 24,
              "edits_applied": 1, "hyperparameters": {"learning_rate": 5e-4, "batch_size": 8}, "patience": 4,
              "frozen": ["embeddings"], "early_stopping": {"best": 1.5, "best_step": 4, "bad_evals": 1,
                                                           "last_eval_step": 8},
              "kernels": "torch", "dtype": "float32", "optimizer": {"kind": "torch"}}
    st = _state()
    st.load_json(round1)
    assert (st.step, st.cursor, st.last_eval_step, st.edits_applied) == (8, 64, 8, 1)
    assert st.early_stopping.state_dict() == {"best": 1.5, "best_step": 4, "bad_evals": 1, "patience": 4}
    assert st.hyperparameters.learning_rate == 5e-4 and st.lora == {} and st.lora_fingerprint is None
