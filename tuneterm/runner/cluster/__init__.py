"""The Ray executor: queued sessions run as Ray actors on a cluster (docs/cluster.md).

One actor per worker attempt, named ``tt-<workspace hash>-<run id>-<nonce>`` in the Ray
namespace ``tuneterm`` and detached from the daemon (a daemon restart finds it again by
name). It asks for ``gpus_per_session`` GPUs and ``cpus_per_session`` CPUs; Ray sets
``CUDA_VISIBLE_DEVICES`` in it. The actor is a thin relay around the same worker program
the local executor runs (``python -m tuneterm.engine.worker RUN_DIR [--resume]``), started
as its child:

  daemon --actor call send(line)--> actor --stdin--> worker      (control messages)
  daemon <--actor call read()------ actor <--stdout-- worker      (acks, rejects, "look now")

Rows (metrics, events) and checkpoints are written by the worker straight into the run
directory, which must be on a filesystem every node mounts at the same path (NFS, a
cluster filesystem); the daemon follows those files as it does for local workers. An actor
that cannot see its run directory refuses to start, naming its node.

The worker dies with its actor (``PR_SET_PDEATHSIG``): killing the actor, or losing its
node, ends the attempt like a kill -9 of a local worker — the session is ``interrupted``
and a new actor, wherever Ray places it, resumes from the last checkpoint.

``address = "local"`` starts a single-node Ray for the workspace (``ray start --head``,
its files under ``temp_dir``) or reuses the one a previous daemon started; ``daemon stop``
stops it. This module imports ray only when a RayExecutor is made (never torch).

Modules: ``config`` ([runner.ray] settings; imports no ray), ``head`` (the workspace's local
single-node Ray), ``actor`` (the actor that runs on a node), ``executor`` (the daemon's side:
RayExecutor and RayWorker). None of them imports ray at import time.
"""
