"""`tuneterm run`'s own lines for the events worth reading: the log's wording, not JSON; a pipe
gets no checkpoint lines."""

from __future__ import annotations

import io

from tuneterm.engine.progress import Progress


def test_event_lines_read_as_the_log_does():
    out = io.StringIO()
    p = Progress(stream=out)
    p.event({"kind": "edit", "step": 2, "source": "oom", "time": 1.0,
             "edit": {"step": 2, "set": {"batch_size": 2, "gradient_accumulation": 2}}})
    p.event({"kind": "reject", "step": 3, "id": "x", "reason": "learning_rate: -1 is below 0"})
    p.event({"kind": "checkpoint", "step": 4, "path": "checkpoints/step-00000004", "reason": "interval"})
    p.event({"kind": "warning", "message": "training data: 3 pairs cut"})
    assert out.getvalue().splitlines() == [
        "step 2: edit applied (oom): batch_size=2 gradient_accumulation=2",
        "step 3: edit rejected: learning_rate: -1 is below 0",
        "warning: training data: 3 pairs cut",
    ]
