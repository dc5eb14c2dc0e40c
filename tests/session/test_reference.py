"""docs/session.md and the session template are generated from the schema: keep them in sync."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from tuneterm.session import Session, loads_session
from tuneterm.session.reference import TEMPLATE_PATH, render_markdown, render_template
from tuneterm.session.schema import SECTIONS

REPO = Path(__file__).resolve().parents[2]
HINT = "regenerate with: python -m tuneterm.session.reference"


def test_docs_in_sync():
    assert (REPO / "docs" / "session.md").read_text(encoding="utf-8") == render_markdown(), HINT


def test_template_in_sync():
    assert TEMPLATE_PATH.read_text(encoding="utf-8") == render_template(), HINT


def test_docs_name_every_table_and_key():
    doc = render_markdown()
    for sec, cls in SECTIONS.items():
        assert f"## `[{sec}]`" in doc
        for f in dataclasses.fields(cls):
            assert f"| `{f.name}` |" in doc, f"{sec}.{f.name}"


def test_template_is_valid_and_uncommented_gives_the_defaults():
    text = TEMPLATE_PATH.read_text(encoding="utf-8")
    assert loads_session(text) == Session()
    tables, log = text.split("# The live-edit log")
    uncommented = re.sub(r"^# (\w+ = )", r"\1", tables, flags=re.M)
    assert loads_session(uncommented) == Session()
    n_keys = sum(len(dataclasses.fields(cls)) for cls in SECTIONS.values())
    assert len(re.findall(r"^\w+ = ", uncommented, flags=re.M)) == n_keys
