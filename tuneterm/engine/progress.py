"""The one progress line tuneterm draws on stderr, redrawn in place and only on a terminal:
the steps of `tuneterm run` (a metric sink: bar, loss, learning rate, rate, time left; an
evaluation and the events worth reading get a line of their own, which a pipe gets too),
and the rows of `predict` and `eval` (called with the number done so far)."""

from __future__ import annotations

import sys
import time
from typing import IO

BAR_WIDTH = 24
NOTED_EVENTS = ("edit", "reject", "early_stop", "error", "checkpoint")  # a line each (a pipe: not checkpoints)


class Progress:
    """``Progress(total, what, min_total=N)`` counts rows (drawn only for ``total >= N``);
    ``Progress()`` is a sink for a training run's rows (its total is the rows' total_steps)."""

    def __init__(self, total: int = 0, what: str = "", *, min_total: int = 0, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.total, self.what, self.min_total = total, what, min_total
        self.open = False  # a line drawn in place and not ended yet
        self.last = 0.0
        self.t0 = time.monotonic()
        self.step0: int | None = None

    def _bar(self, done: int) -> str:
        frac = min(1.0, done / self.total) if self.total else 0.0
        n = int(frac * BAR_WIDTH)
        return f"[{'#' * n}{'-' * (BAR_WIDTH - n)}]"

    def _line(self, text: str, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
            self.open = not final
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    # -- rows ---------------------------------------------------------------------------------
    def __call__(self, done: int) -> None:
        if self.total >= self.min_total:
            self._line(f"{self.what} {self._bar(done)} {done}/{self.total} rows")

    # -- a training run's rows (control.Sink) -------------------------------------------------
    def metric(self, row: dict) -> None:
        if row.get("kind") == "eval":
            # the first three of the task's metrics (the trainer writes them in the task's order)
            parts = [f"{k}={v:.4f}" for k, v in row.items() if k.startswith("val_") and v is not None][:3]
            self._line(f"eval @ step {row['step']}: " + " ".join(parts), final=True)
            return
        step = row["step"]
        self.total = row.get("total_steps") or self.total
        if self.step0 is None:
            self.step0 = step - 1
        now = time.monotonic()
        if not self.tty or (now - self.last < 0.1 and step < self.total):
            return
        self.last = now
        rate = (step - self.step0) / max(1e-9, now - self.t0)
        eta = (self.total - step) / rate if rate > 0 else 0
        loss = "nan" if row.get("loss") is None else f"{row['loss']:.4f}"
        self._line(f"{self._bar(step)} {step}/{self.total} ep {row['epoch']:.2f} loss {loss} lr {row['lr']:.2e} "
                   f"{rate:.1f} it/s eta {int(eta)}s")

    def event(self, row: dict) -> None:
        kind = row.get("kind")
        if kind == "warning":
            self._line(f"warning: {row.get('message')}", final=True)
        elif kind in NOTED_EVENTS and (self.tty or kind != "checkpoint"):
            # log.txt's line ("step 2: edit applied (oom): batch_size=2 gradient_accumulation=2")
            from tuneterm.engine.logbook import describe

            self._line(describe(row), final=True)

    def reply(self, msg: dict) -> None:
        pass

    def close(self) -> None:
        if self.open:
            self.stream.write("\n")
            self.stream.flush()
            self.open = False
