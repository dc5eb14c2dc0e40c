"""One optimizer step's gradients over its micro-batches, on one process or many.

Each micro-batch is collated whole (padded to what the step needs) and each rank takes
its rows of it (``strategy.rows``): the same units in the same order at any process count.
The loss weights (examples, or trained tokens for an LM) are summed across ranks before
scaling, so the gradient is the global batch's; the dropout masks of a rank's rows are
that slice of the whole micro-batch's (dropout.DropoutContext's ``row0``). An out-of-memory
error on any rank is agreed on by every rank (one sum), so all of them halve together.
"""

from __future__ import annotations

import torch

from tuneterm.engine import accel, oom


def _rows(batch: dict, a: int, b: int) -> dict:
    return {k: (v[a:b] if isinstance(v, torch.Tensor) and v.dim() > 0 else v) for k, v in batch.items()}


def forward_backward(t, step_plan) -> float:
    """Gradients of the step's micro-batches for trainer ``t`` (its task, model, data,
    dropout context, strategy), each weighted by its share of the step's units; returns
    the step's mean loss. Raises oom.OutOfMemory on every rank when any rank ran out."""
    st, strat = t.state, t.strategy
    order = t.order(step_plan.epoch)
    t.model.train()
    mine = []
    for a, b in step_plan.slices:
        whole = t.task.collate(t.data.train, order[a:b], t.device)
        r0, r1 = strat.rows(b - a)
        if r1 == r0 and strat.every_rank_computes:
            mine.append((0, _rows(whole, 0, 1), False))  # one row at weight 0: FSDP's gathers are collectives
        else:
            mine.append((r0, _rows(whole, r0, r1) if (r0, r1) != (0, b - a) else whole, r1 > r0))
    weights = [t.task.batch_weight(batch) if has else 0 for _, batch, has in mine]
    total = strat.all_sum([float(sum(weights))])[0] if strat.world > 1 else sum(weights)
    loss_sum = torch.zeros((), dtype=torch.float64)
    t.task.forget_step_metrics()  # the values of a step redone after running out of memory
    out_of_memory = 0.0
    try:
        for m, ((r0, batch, has), w) in enumerate(zip(mine, weights)):
            t.fault.maybe_fail(st.step + 1, m == len(mine) - 1)
            if not has:
                if strat.every_rank_computes:
                    t.dctx.at(st.step, m, r0)
                    with accel.autocast(t.acc), t.task.uncounted():
                        (strat.run(t.model, t.task.loss, batch) * 0.0).backward()
                continue
            t.dctx.at(st.step, m, r0)
            with accel.autocast(t.acc):
                loss = strat.run(t.model, t.task.loss, batch)
            (loss * (w / total)).backward()
            loss_sum += loss.detach().double().cpu() * w
    except oom.OutOfMemory:
        if strat.world == 1:
            raise
        out_of_memory = 1.0
    if strat.world > 1:
        loss_total, oom_ranks = strat.all_sum([float(loss_sum), out_of_memory])
        if oom_ranks:
            raise oom.OutOfMemory(f"CUDA out of memory on {int(oom_ranks)} of {strat.world} ranks")
        strat.reduce_gradients(t.opt.trainable())
        return loss_total / total
    return float(loss_sum / total)
