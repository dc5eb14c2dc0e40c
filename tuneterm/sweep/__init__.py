"""Hyperparameter sweeps over the queue (no torch; optuna only while a sweep runs):

    spec.py    the sweep file (a session file with a [sweep] table): load_sweep
    trial.py   a trial's session: trial_session
    study.py   the Optuna study in WS/.tuneterm/sweeps.db: open, create/resume, describe, delete
    driver.py  run_sweep: trials in flight, reports, pruning, re-attaching after a crash
    trials.py  the trial runner the driver is given: QueueTrials (sessions of the runner queue)
    report.py  the summary and the best session file
"""
