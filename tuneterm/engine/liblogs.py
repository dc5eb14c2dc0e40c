"""Where the libraries' own warnings go: ``warnings.warn`` (a FutureWarning of transformers
or peft) and the loggers of transformers and huggingface_hub ("Token indices sequence
length is longer...") are routed into Python logging, so that a run's log.txt holds them
and the user's terminal does not: there a run prints its progress, and bad input one line.
"""

from __future__ import annotations

import logging

WARNINGS = "py.warnings"  # the logger of warnings.warn once captured
# Loggers (by the first part of their name) that belong to libraries, not to tuneterm.
LIBRARIES = ("transformers", "huggingface_hub", "peft", "accelerate", "torch", "datasets")


def route_library_warnings() -> None:
    """Send the libraries' warnings through the root logger's handlers (and only those).
    Idempotent; call it after logging is set up, or before a check that has no log."""
    logging.captureWarnings(True)
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        pass
    else:
        hf_logging.disable_default_handler()  # its own stderr handler; set up at most once
        hf_logging.enable_propagation()
    try:
        import huggingface_hub.utils.logging  # noqa: F401 - its import adds a stderr handler
    except ImportError:
        pass
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            if type(h) is logging.StreamHandler:  # a terminal handler of the library's own
                logger.removeHandler(h)
        logger.propagate = True
    root = logging.getLogger()
    if not root.handlers:
        # Else logging's last resort would print them on stderr after all.
        root.addHandler(logging.NullHandler())


def quiet_loading() -> None:
    """No "Loading weights" bar: transformers draws one (tqdm, on stderr) at every
    from_pretrained, and a run's terminal shows tuneterm's own lines only."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class OwnLines(logging.Filter):
    """For a handler on a terminal: tuneterm's lines, not the libraries'."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != WARNINGS and record.name.split(".")[0] not in LIBRARIES
