"""The Ray executor's old import path: its parts live in ``tuneterm.runner.cluster``
(config, head, actor, executor). Imports no ray."""

from tuneterm.runner.cluster.config import NAMESPACE, RAY_KEYS, RayConfig, parse_ray_config, workspace_tag
from tuneterm.runner.cluster.head import _pids_under, start_local_head, stop_local_head

__all__ = ["NAMESPACE", "RAY_KEYS", "RayConfig", "RayExecutor", "parse_ray_config", "start_local_head",
           "stop_local_head", "workspace_tag", "_pids_under"]


def __getattr__(name: str):
    if name in ("RayExecutor", "RayWorker"):  # the executor module, imported when asked for
        from tuneterm.runner.cluster import executor

        return getattr(executor, name)
    raise AttributeError(name)
