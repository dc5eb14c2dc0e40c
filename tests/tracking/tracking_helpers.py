"""Reading trackers back with their own readers: TensorBoard's EventAccumulator, MLflow's client."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from engine_helpers import rows, run_cli
from tiny_sessions import tiny_session_toml

# A live edit at step 4 (two messages: they land at the same boundary) and an evaluation every 6 steps.
CONTROL = [{"type": "set", "id": "lr", "values": {"learning_rate": 1e-3}, "at_step": 4},
           {"type": "freeze", "id": "fr", "layers": ["layer.0"], "at_step": 4}]


def session_file(workspace: Path, name: str, tracking: str, steps: int = 12, extra: str = "") -> Path:
    path = workspace / "sessions" / f"{name}.toml"
    path.write_text(tiny_session_toml(name, seed=3, steps=steps, eval_interval=6, checkpoint_interval=4,
                                      keep_last=20) + extra + "\n[tracking]\n" + tracking)
    return path


def steered_run(workspace: Path, capsys, session: Path) -> Path:
    ctl = workspace / "control.jsonl"
    ctl.write_text("".join(json.dumps({"v": 1, **m}) + "\n" for m in CONTROL))
    code, out, err = run_cli(["run", str(session), "--control", str(ctl)], capsys)
    assert code == 0, err
    return Path(out.strip().splitlines()[-1])


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected(run_dir: Path) -> dict:
    """What every tracker must hold, from the run directory."""
    metrics = rows(run_dir)
    train = {r["step"]: r["loss"] for r in metrics if r["kind"] == "train"}
    evals = {r["step"]: r["val_loss"] for r in metrics if r["kind"] == "eval"}
    return {"loss": train, "val_loss": evals}


# ----------------------------------------------------------------------------- TensorBoard
def tensorboard(logdir: Path) -> dict:
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(logdir), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    tags = acc.Tags()
    texts = {t: [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(t)]
             for t in tags["tensors"] if not t.startswith("_hparams_")}
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]}
    hparams = {}
    if "_hparams_/session_start_info" in tags["tensors"]:
        from tensorboard.plugins.hparams import plugin_data_pb2

        content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
        info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}
    return {"scalars": scalars, "texts": texts, "hparams": hparams}


# ----------------------------------------------------------------------------- MLflow
def mlflow_runs(uri: str, experiment: str = "tuneterm") -> list:
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {uri}"
    return [(client, r) for r in client.search_runs([exp.experiment_id])]


def history(client, run, key: str) -> list:
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
