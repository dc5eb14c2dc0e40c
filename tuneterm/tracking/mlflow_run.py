"""An MLflow run per tuneterm run, through MLflow's client (``MlflowClient``).

The run is found again by its tag ``tuneterm.run_id`` (the run directory's name): a
resumed attempt and `tuneterm track` continue the same MLflow run, and a step already
logged under a key is never logged twice, so writing a run again adds nothing. Params
are the session's knobs; metrics ``train/*`` and ``eval/*`` with their steps; each edit a
tag ``edit.step-NNNNNN`` naming its step and values; the end state the run's status
(done, early_stopped, stopped: FINISHED; failed: FAILED; paused: KILLED until it resumes)
and the tag ``tuneterm.state``.
"""

from __future__ import annotations

import logging
import os
import time

from tuneterm.tracking.rows import EditMark, Ended, RunInfo, Scalars, Started

RUN_TAG = "tuneterm.run_id"
STATUS = {"done": "FINISHED", "early_stopped": "FINISHED", "stopped": "FINISHED", "failed": "FAILED",
          "paused": "KILLED"}
MAX_METRICS, MAX_TAGS, MAX_VALUE = 1000, 100, 5000  # MLflow's log_batch and value limits
# MLflow's own loggers: their lines (retries, store migrations) are not the run's log.
_QUIET = ("mlflow", "alembic", "urllib3")


def is_file_store(uri: str) -> bool:
    return uri.startswith("file:") or "://" not in uri and not uri.startswith("databricks")


class MlflowTracker:
    name = "mlflow"

    def __init__(self, uri: str, experiment: str, info: RunInfo, *, live: bool) -> None:
        self.uri, self.experiment, self.info, self.live = uri, experiment, info, live
        self.client = None
        self.run_id: str | None = None
        self.logged: dict[str, set] = {}
        self.added = 0  # metric values logged by this writer

    def describe(self) -> str:
        return f"mlflow ({self.uri}, experiment {self.experiment!r})"

    def open(self) -> None:
        if is_file_store(self.uri):
            # MLflow 3 keeps the file store only on request; "./mlruns" is a documented choice here.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        import warnings

        from mlflow.tracking import MlflowClient

        # Deprecation notices of MLflow's store and its database layer are not the run's business.
        warnings.filterwarnings("ignore", module=r"(mlflow|sqlalchemy|alembic)(\.|$)")
        for name in _QUIET:  # after the import: MLflow sets its loggers up when imported
            logging.getLogger(name).setLevel(logging.WARNING)
            if self.live:  # log.txt has the run's lines; a failure is one line of ours
                logging.getLogger(name).propagate = False
                logging.getLogger(name).addHandler(logging.NullHandler())
        self.client = c = MlflowClient(tracking_uri=self.uri)
        exp = c.get_experiment_by_name(self.experiment)
        if exp is None:
            try:
                exp_id = c.create_experiment(self.experiment)
            except Exception:  # noqa: BLE001 - another run created it meanwhile
                exp = c.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        found = c.search_runs([exp_id], filter_string=f"tags.`{RUN_TAG}` = '{self.info.run_id}'", max_results=1)
        if found:
            run = found[0]
            self.run_id = run.info.run_id
            for key in run.data.metrics:
                self.logged[key] = {m.step for m in c.get_metric_history(self.run_id, key)}
            have = run.data.params
            if self.live and run.info.status != "RUNNING":
                c.update_run(self.run_id, status="RUNNING")
        else:
            start = int((self.info.started or time.time()) * 1000)
            run = c.create_run(exp_id, start_time=start, run_name=self.info.run_id,
                               tags={RUN_TAG: self.info.run_id, "tuneterm.session": self.info.name})
            self.run_id, have = run.info.run_id, {}
        self._params(have)

    def _params(self, have: dict) -> None:
        from mlflow.entities import Param

        todo = [Param(k, str(v)[:MAX_VALUE]) for k, v in self.info.knobs.items() if k not in have]
        for i in range(0, len(todo), MAX_TAGS):
            self.client.log_batch(self.run_id, params=todo[i:i + MAX_TAGS])

    def write(self, calls: list) -> None:
        from mlflow.entities import Metric, RunTag

        metrics, tags, ended = [], {}, None
        for c in calls:
            if isinstance(c, Scalars):
                ms = int((c.wall or time.time()) * 1000)
                for key, value in c.values.items():
                    steps = self.logged.setdefault(key, set())
                    if c.step not in steps:
                        steps.add(c.step)
                        metrics.append(Metric(key, float(value), ms, c.step))
            elif isinstance(c, EditMark):
                tags[f"edit.step-{c.step:06d}"] = f"step {c.step}: " + "; ".join(c.at_step)
            elif isinstance(c, Started):
                row = c.row
                tags.update({f"tuneterm.{k}": str(row[k]) for k in ("model", "task", "device", "kernels",
                                                                      "trainable_params") if k in row})
            elif isinstance(c, Ended):
                ended = c
                tags.update({"tuneterm.state": c.state, "tuneterm.end_step": str(c.step)})
                if c.reason:
                    tags["tuneterm.reason"] = c.reason
        tag_rows = [RunTag(k, v[:MAX_VALUE]) for k, v in tags.items()]
        self.added += len(metrics)
        for i in range(0, len(metrics), MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + MAX_METRICS])
        for i in range(0, len(tag_rows), MAX_TAGS):
            self.client.log_batch(self.run_id, tags=tag_rows[i:i + MAX_TAGS])
        if ended is not None:
            end_ms = int((ended.wall or time.time()) * 1000)
            self.client.set_terminated(self.run_id, STATUS.get(ended.state, "FAILED"), end_time=end_ms)

    def close(self) -> None:
        pass

    def abandon(self) -> None:
        pass
