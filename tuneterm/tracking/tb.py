"""TensorBoard event files, written with TensorBoard's own writer (no TensorFlow, no torch).

Scalars ``train/*`` every step and ``eval/*`` at each evaluation; at the start the knobs as
an hparams session (the HParams tab) and as a text table (``session/knobs``); each applied
edit as text (``edits``) at its step; the end state as text (``run/end``). A resumed attempt
replaces the folder's event files: it writes the run's rows so far from the run directory
(the interrupted attempt's rows after its checkpoint are gone from there), then goes on live.
"""

from __future__ import annotations

import time
from pathlib import Path

from tuneterm.tracking.rows import EditMark, Ended, RunInfo, Scalars, Started


class TensorBoardTracker:
    name = "tensorboard"

    def __init__(self, logdir: Path, info: RunInfo) -> None:
        self.logdir = Path(logdir)
        self.info = info
        self.writer = None

    def describe(self) -> str:
        return f"tensorboard ({self.logdir})"

    def open(self) -> None:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._pb = event_pb2
        if self.info.resumed and self.logdir.is_dir():
            # This attempt writes the whole run again, its rows so far first: the earlier files
            # go (TensorBoard's readers do not all drop text past a restart marker).
            for old in self.logdir.glob("events.out.tfevents.*"):
                old.unlink()
        self.writer = EventFileWriter(str(self.logdir), max_queue_size=1000, flush_secs=10)
        self._knobs()
        self.writer.flush()

    def _add(self, event) -> None:
        self.writer.add_event(event)

    def _summary(self, step: int, wall: float | None, values: list) -> None:
        from tensorboard.compat.proto import summary_pb2

        self._add(self._pb.Event(wall_time=wall or time.time(), step=step, summary=summary_pb2.Summary(value=values)))

    def _text(self, tag: str, step: int, text: str, wall: float | None = None) -> None:
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorboard.plugins.text import metadata

        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode("utf-8")],
                                        tensor_shape=tensor_shape_pb2.TensorShapeProto(
                                            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]))
        meta = metadata.create_summary_metadata(display_name=tag, description="")
        self._summary(step, wall, [summary_pb2.Summary.Value(tag=tag, metadata=meta, tensor=tensor)])

    def _knobs(self) -> None:
        from tensorboard.plugins.hparams import summary_v2

        knobs = self.info.knobs
        pb = summary_v2.hparams_pb(knobs, trial_id=self.info.run_id)
        self._add(self._pb.Event(wall_time=time.time(), step=0, summary=pb))
        table = "| knob | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in knobs.items())
        self._text("session/knobs", 0, table)

    def write(self, calls: list) -> None:
        from tensorboard.compat.proto import summary_pb2

        for c in calls:
            if isinstance(c, Scalars):
                self._summary(c.step, c.wall, [summary_pb2.Summary.Value(tag=t, simple_value=float(v))
                                               for t, v in c.values.items()])
            elif isinstance(c, EditMark):
                self._text("edits", c.step, f"step {c.step}: {c.text}")
            elif isinstance(c, Ended):
                self._text("run/end", c.step, f"{c.state} at step {c.step}" + (f" ({c.reason})" if c.reason else ""),
                           c.wall)
            elif isinstance(c, Started):
                row = c.row
                self._text("run/start", int(row.get("step") or 0),
                           f"{row.get('kind')}: model {row.get('model')} ({row.get('task')}), device "
                           f"{row.get('device')}, {row.get('trainable_params')} trainable parameters, "
                           f"{row.get('total_steps')} steps planned", row.get("time"))
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def abandon(self) -> None:
        self.close()
