"""Which local data sources are tables (no torch, no pyarrow): a ``.parquet`` file, or a
folder written by ``datasets``' ``save_to_disk``. The session checks and the engine's
readers (tuneterm.engine.tables) ask here, so both say the same about a folder."""

from __future__ import annotations

from pathlib import Path

PARQUET = ".parquet"
DATASET_STATE = "state.json"          # a Dataset folder: state.json, dataset_info.json, data-*.arrow
DATASET_DICT = "dataset_dict.json"    # a DatasetDict folder: one Dataset folder per split


def is_table(path: Path) -> bool:
    """A .parquet file, or a folder whose name has no suffix (one that is no data set is
    refused by ``folder_problem``; ``data.csv/`` stays "not a file")."""
    return path.suffix.lower() == PARQUET or (path.is_dir() and not path.suffix)


def folder_problem(path: Path, shown: str | None = None) -> str | None:
    """Why a folder cannot be read as a data set (None: it can); ``shown``: the path as the
    user wrote it (a session's relative one)."""
    name = (shown or str(path)).rstrip("/")
    if (path / DATASET_STATE).is_file():
        return None
    if (path / DATASET_DICT).is_file():
        splits = sorted(p.name for p in path.iterdir() if (p / DATASET_STATE).is_file())
        return (f"{name} holds a DatasetDict ({', '.join(splits) or 'no splits'}): name one split's folder, "
                f"e.g. {name}/{splits[0] if splits else 'train'}")
    return f"{name} is a folder, not one written by datasets' save_to_disk (no {DATASET_STATE} in it)"
