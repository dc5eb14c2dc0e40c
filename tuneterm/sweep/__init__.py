"""Hyperparameter sweeps: an Optuna study whose trials are sessions in the runner's queue.

    spec.py    the sweep file (a session file with a [sweep] table): load_sweep, trial_session
    study.py   the study in WS/.tuneterm/sweeps.db: run_sweep, open_study, describe_study

No torch, no textual; optuna is imported inside functions only (docs/sweep.md).
"""
