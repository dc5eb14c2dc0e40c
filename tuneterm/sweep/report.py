"""What a sweep says at its end: the summary, and the best trial's session saved as
``sessions/<sweep>-best.toml`` (optuna is imported lazily)."""

from __future__ import annotations

from pathlib import Path

from tuneterm.rundir import RunDir, read_jsonl
from tuneterm.sweep.spec import Sweep
from tuneterm.sweep.study import describe_study


def eval_values(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    out: dict[int, float] = {}
    for r in read_jsonl(RunDir(run_dir).metrics):
        if r.get("kind") == "eval" and isinstance(r.get(metric), (int, float)):
            out[int(r["step"])] = float(r[metric])
    return sorted(out.items())


def format_params(params: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def finish(study, sweep: Sweep, ws: Path, say) -> dict:
    """Save the best trial's session as ``sessions/<sweep>-best.toml``; the summary."""
    from optuna.trial import TrialState

    from tuneterm.session.io import load_session, save_session

    summary = describe_study(study, importances=False)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        say(f"sweep {sweep.name}: no trial completed; nothing to save")
        return summary
    best = study.best_trial
    src = ws / best.user_attrs["session_file"]
    session = load_session(src, ws)
    session.session.description = (f"best trial {best.number} of sweep {sweep.name}: {sweep.objective} "
                                   f"{best.value:.6g} (run {best.user_attrs.get('run_id')}); "
                                   + format_params(best.params))
    dest = ws / "sessions" / f"{sweep.name}-best.toml"
    save_session(session, dest)
    summary["best_file"] = str(dest.relative_to(ws))
    counts = summary["counts"]
    say(f"sweep {sweep.name}: {counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned, "
        f"{counts.get('FAIL', 0)} failed; best trial {best.number}: {sweep.objective} {best.value:.4f}  "
        f"{format_params(best.params)}")
    say(f"saved {summary['best_file']} (replay its run: tuneterm replay {best.user_attrs.get('run_id')} --check)")
    return summary
