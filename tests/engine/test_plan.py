"""The step plan (tuneterm.engine.plan): pure functions, no model."""

from __future__ import annotations

import pytest

from tuneterm.engine import plan
from tuneterm.engine.plan import Knobs, Position


def run_plan(k: Knobs, edits: dict | None = None) -> list[plan.StepPlan]:
    """Drive the plan as the trainer does: at each boundary apply the edit due (a dict of
    knob changes keyed by steps done), roll, stop when done, take the next step."""
    edits = edits or {}
    pos, steps = Position(), []
    while True:
        if pos.step in edits:
            k = Knobs(**{**k.__dict__, **edits[pos.step]})
        pos = plan.rolled(k, pos)
        if plan.done(k, pos):
            return steps
        sp = plan.next_step(k, pos)
        steps.append(sp)
        pos = sp.after
        assert len(steps) < 10_000


def test_whole_epochs_cut_the_order_into_batches_without_crossing_an_epoch():
    k = Knobs(n=10, epochs=2, max_steps=0, batch_size=4)
    steps = run_plan(k)
    assert [(s.epoch, s.slices) for s in steps] == [
        (0, ((0, 4),)), (0, ((4, 8),)), (0, ((8, 10),)),
        (1, ((0, 4),)), (1, ((4, 8),)), (1, ((8, 10),)),
    ]
    assert [s.epoch_ended for s in steps] == [False, False, True, False, False, True]
    assert plan.total_steps(k, Position()) == 6


def test_fractional_epochs_train_the_last_epoch_on_part_of_its_order():
    k = Knobs(n=10, epochs=2.5, max_steps=0, batch_size=4)
    assert plan.epoch_limit(k, 0) == plan.epoch_limit(k, 1) == 10
    assert plan.epoch_limit(k, 2) == 5 and plan.epoch_limit(k, 3) == 0
    steps = run_plan(k)
    assert [(s.epoch, s.slices) for s in steps][-2:] == [(2, ((0, 4),)), (2, ((4, 5),))]
    assert len(steps) == plan.total_steps(k, Position()) == 8
    assert sum(s.units for s in steps) == 25
    # a quarter epoch of 10 rounds to 2 (never to nothing: at least one unit)
    assert plan.epoch_limit(Knobs(n=10, epochs=0.25, max_steps=0, batch_size=4), 0) == 2
    assert plan.epoch_limit(Knobs(n=10, epochs=0.01, max_steps=0, batch_size=4), 0) == 1


def test_fractional_epochs_with_a_batch_size_edit_mid_run():
    k = Knobs(n=10, epochs=1.5, max_steps=0, batch_size=4)
    # after 2 steps (8 units of epoch 0) the batch size drops to 3
    steps = run_plan(k, {2: {"batch_size": 3}})
    assert [(s.epoch, s.slices) for s in steps] == [
        (0, ((0, 4),)), (0, ((4, 8),)), (0, ((8, 10),)),   # the rest of the epoch at 3 (2 left)
        (1, ((0, 3),)), (1, ((3, 5),)),                    # half of epoch 1: 5 units
    ]
    # total_steps is a pure function of (knobs, position): before the edit it said 2 + 1 + 2
    pos2 = steps[1].after
    assert plan.total_steps(k, pos2) == 2 + 1 + 2
    k3 = Knobs(n=10, epochs=1.5, max_steps=0, batch_size=3)
    assert plan.total_steps(k3, pos2) == 5 == len(steps)
    # the order is never reshuffled by the edit: every unit of epoch 0 exactly once
    covered = [i for s in steps if s.epoch == 0 for a, b in s.slices for i in range(a, b)]
    assert covered == list(range(10))


def test_gradient_accumulation_takes_several_micro_batches_per_step():
    k = Knobs(n=10, epochs=1, max_steps=0, batch_size=3, gradient_accumulation=2)
    steps = run_plan(k)
    assert [s.slices for s in steps] == [((0, 3), (3, 6)), ((6, 9), (9, 10))]
    assert plan.total_steps(k, Position()) == 2
    # an accumulation edit keeps the cursor: same units, more of them per step
    steps = run_plan(Knobs(n=12, epochs=1, max_steps=0, batch_size=2), {1: {"batch_size": 1, "gradient_accumulation": 2}})
    assert [s.slices for s in steps][:3] == [((0, 2),), ((2, 3), (3, 4)), ((4, 5), (5, 6))]


def test_max_steps_goes_round_the_data_and_edits_move_the_end():
    k = Knobs(n=5, epochs=1, max_steps=4, batch_size=2)
    steps = run_plan(k)
    assert [(s.epoch, s.slices) for s in steps] == [(0, ((0, 2),)), (0, ((2, 4),)), (0, ((4, 5),)), (1, ((0, 2),))]
    assert plan.total_steps(k, Position()) == 4
    assert len(run_plan(k, {2: {"max_steps": 7}})) == 7
    # max_steps = 0 falls back to epochs
    assert len(run_plan(k, {2: {"max_steps": 0}})) == 3


def test_an_epochs_edit_at_the_end_of_the_last_epoch_continues_into_a_new_one():
    k = Knobs(n=4, epochs=1, max_steps=0, batch_size=2)
    end = run_plan(k)[-1].after
    assert end == Position(2, 0, 4)  # the last epoch does not roll
    assert plan.done(k, end)
    k2 = Knobs(n=4, epochs=2, max_steps=0, batch_size=2)
    assert not plan.done(k2, end)
    assert plan.rolled(k2, end) == Position(2, 1, 0)
    assert plan.total_steps(k2, end) == 4
    # done() has no side effect: asking twice gives the same answer at the same position
    assert plan.done(k2, end) is plan.done(k2, end) is False


@pytest.mark.parametrize("epochs,bs,ga", [(1, 8, 1), (2.5, 8, 1), (3.3, 5, 2), (0.4, 3, 3), (7, 96, 1)])
def test_total_steps_equals_the_steps_the_plan_takes(epochs, bs, ga):
    k = Knobs(n=96, epochs=epochs, max_steps=0, batch_size=bs, gradient_accumulation=ga)
    steps = run_plan(k)
    assert len(steps) == plan.total_steps(k, Position())
    # and from any position on the way
    for i, s in enumerate(steps):
        assert plan.total_steps(k, s.after) == len(steps), i
    assert plan.progress(k, steps[-1].after) == pytest.approx(epochs, abs=0.5 / 96)  # rounded to whole units
