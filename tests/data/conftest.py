"""The same rows as JSON lines, a .parquet file and a `datasets` save_to_disk folder."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("pyarrow", reason="the data extra (pip install -e .[data])")
pytest.importorskip("datasets", reason="the data extra (pip install -e .[data])")

WORDS = {"astronomy": "star planet orbit telescope galaxy comet moon",
         "cooking": "oven butter flour recipe bake pan salt",
         "football": "goal pitch striker match league keeper ball"}
COLOURS = "red green blue sun moon star tree river stone cloud".split()


def labelled_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    labels = sorted(WORDS)
    return [{"id": i, "text": " ".join(rng.choice(WORDS[labels[i % 3]].split()) for _ in range(rng.randint(3, 8))),
             "label": labels[i % 3]} for i in range(n)]


def chat_rows(n: int, seed: int) -> list[dict]:
    """messages records (a list of {role, content} structs in the table)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.choice(COLOURS), rng.choice(COLOURS)
        out.append({"messages": [{"role": "user", "content": f"Say {a} {b}"},
                                 {"role": "assistant", "content": f"{a} {b} {a}"}]})
    return out


def write_all(folder: Path, stem: str, rows: list[dict]) -> dict:
    """{"jsonl": path, "parquet": path, "datasets": folder} holding ``rows``."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    datasets.disable_progress_bars()
    folder.mkdir(parents=True, exist_ok=True)
    jsonl = folder / f"{stem}.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), folder / f"{stem}.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(folder / f"{stem}-ds"))
    return {"jsonl": jsonl, "parquet": folder / f"{stem}.parquet", "datasets": folder / f"{stem}-ds"}


@pytest.fixture
def data_ws(workspace: Path) -> Path:
    write_all(workspace / "data", "train", labelled_rows(60, 0))
    write_all(workspace / "data", "val", labelled_rows(18, 1))
    write_all(workspace / "data", "chat", chat_rows(40, 2))
    write_all(workspace / "data", "chatval", chat_rows(8, 3))
    return workspace
