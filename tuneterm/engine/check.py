"""Checks that need the model: layer names (`tuneterm validate`), a deep check and a
smoke step (`queue add --smoke` runs these in a subprocess: the runner never imports torch)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tuneterm.errors import UserError
from tuneterm.session.schema import Session


def _meta_groups(session: Session, workspace: Path | None) -> list:
    """The layer groups of the session's model, from a weightless (meta-device) copy."""
    from tuneterm.engine.layers import layer_groups
    from tuneterm.engine.models import build_model, load_tokenizer

    tok = load_tokenizer(session.model.source, workspace)
    return layer_groups(build_model(session.model.source, 2, tokenizer=tok, workspace=workspace, meta=True))


def model_layer_names(session: Session, workspace: Path | None) -> list[str]:
    return [g.name for g in _meta_groups(session, workspace)]


def layer_table(session: Session, workspace: Path | None) -> list[dict]:
    """[{"name", "params", "frozen"}] with the session's initial freezing applied."""
    groups = _meta_groups(session, workspace)
    names = [g.name for g in groups]
    unknown = [n for n in session.freeze.layers if n not in names]
    if unknown:
        raise UserError(f"freeze.layers: unknown layer group {unknown[0]!r}; this model has {', '.join(names)}")
    frozen = set(session.freeze.layers)
    return [{"name": g.name, "params": g.numel, "frozen": g.name in frozen} for g in groups]


def deep_check(session: Session, workspace: Path, smoke: bool = False) -> None:
    """Load model, tokenizer and data (and with ``smoke`` train one step in a throwaway
    run directory). Raises UserError with a one-line reason."""
    from tuneterm.engine.control import Mailbox
    from tuneterm.engine.loop import Trainer
    from tuneterm.errors import TrainingError
    from tuneterm.session.io import save_session

    s = session.copy()
    s.edits = []
    s.hyperparameters.max_steps = 1
    s.checkpoint.interval_steps = 0
    s.evaluation.interval_steps = 0
    s.data.max_eval_samples = min(s.data.max_eval_samples or 8, 8)
    with tempfile.TemporaryDirectory(prefix="tuneterm-check-") as tmp:
        rd = Path(tmp)
        save_session(s, rd / "session.toml")
        trainer = Trainer(s, rd, workspace, sinks=[], mailbox=Mailbox())
        try:
            trainer.setup()
            if smoke:
                trainer._train_step()
        except TrainingError as e:
            raise UserError(f"smoke step failed: {e}") from None
        except (RuntimeError, ValueError) as e:
            raise UserError(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        finally:
            trainer.close()
