"""Preference data: TRL's record formats (plain strings, conversations through the chat
template, the prompt implicit in chosen/rejected), tokenised as TRL's DPOTrainer does,
malformed pairs refused with file:line: field (exit 2, nothing written), truncation counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pref_helpers import pair_records, pref_session, write_pairs
from engine_helpers import run_cli

from tuneterm.engine import pref_data as PD
from tuneterm.errors import UserError
from tuneterm.session.schema import DataSpec


def _load(path: Path, **kw):
    return PD.records_from(path, DataSpec(source=str(path), **kw), "data.source")


def _text(tok, ids) -> str:
    return tok.decode(ids)


def test_conversational_pairs_go_through_the_chat_template(tmp_path, tok):
    fmt, recs = _load(write_pairs(tmp_path / "p.jsonl", pair_records(3)))
    assert fmt == "prompt-chosen-rejected" and recs[0].chat
    p, c, r = PD.tokenize(recs[0], tok)
    # the prompt with the generation prompt; each completion is the assistant's text and its end of turn
    assert _text(tok, p) == _text(tok, tok(tok.apply_chat_template(recs[0].prompt, tokenize=False,
                                                                  add_generation_prompt=True),
                                            add_special_tokens=False)["input_ids"])
    assert _text(tok, c) == "red green cat [SEP]"
    assert _text(tok, r) == "cat green red red [SEP]"


def test_plain_strings_get_an_end_of_sequence_token(tmp_path, tok):
    fmt, recs = _load(write_pairs(tmp_path / "p.jsonl", pair_records(3, chat=False)))
    assert fmt == "prompt-chosen-rejected" and not recs[0].chat
    p, c, r = PD.tokenize(recs[0], tok)
    assert _text(tok, p) == "[CLS] repeat : red green cat - >"  # the tokenizer's own special tokens, as TRL
    assert _text(tok, c) == "red green cat [SEP] [SEP]"  # the added end-of-sequence, then WordPiece's own
    assert _text(tok, r) == "cat green red red [SEP] [SEP]"


def test_the_implicit_prompt_is_the_shared_opening(tmp_path, tok):
    conv = [{"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]} for r in pair_records(2)]
    fmt, recs = _load(write_pairs(tmp_path / "c.jsonl", conv))
    assert fmt == "chosen-rejected"
    assert recs[0].prompt == pair_records(2)[0]["prompt"] and recs[0].chosen == pair_records(2)[0]["chosen"]
    strings = [{"chosen": "The sky is blue.", "rejected": "The sky is green."}]
    _, recs = _load(write_pairs(tmp_path / "s.jsonl", strings))
    assert (recs[0].prompt, recs[0].chosen, recs[0].rejected) == ("The sky is", " blue.", " green.")  # TRL's rule


@pytest.mark.parametrize("chat", [True, False], ids=["conversational", "standard"])
def test_tokenised_as_trl_does(tmp_path, tok, chat):
    data_utils = pytest.importorskip("trl.data_utils")
    rows = pair_records(4, chat=chat)
    _, recs = _load(write_pairs(tmp_path / "p.jsonl", rows))
    for row, rec in zip(rows, recs):
        if chat:
            p = data_utils._tokenize(tok, row["prompt"], add_generation_prompt=True)["input_ids"]
            pc = data_utils._tokenize(tok, row["prompt"] + row["chosen"])["input_ids"]
            pr = data_utils._tokenize(tok, row["prompt"] + row["rejected"])["input_ids"]
        else:
            eos = tok.eos_token
            p = data_utils._tokenize(tok, row["prompt"])["input_ids"]
            pc = data_utils._tokenize(tok, row["prompt"] + row["chosen"] + eos)["input_ids"]
            pr = data_utils._tokenize(tok, row["prompt"] + row["rejected"] + eos)["input_ids"]
        n = min(data_utils.common_prefix_length(p, pc), data_utils.common_prefix_length(p, pr))
        assert PD.tokenize(rec, tok) == (p[:n], pc[n:], pr[n:])


MALFORMED = [
    ({"prompt": "p", "chosen": "a"}, "1: rejected: missing"),
    ({"prompt": "p", "chosen": "same", "rejected": "same"}, "1: rejected: the same as chosen"),
    ({"prompt": [{"role": "user", "content": "p"}], "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]},
     "1: chosen: expected a list of {role, content} like prompt, got a string"),
    ({"prompt": "p", "chosen": [{"role": "robot", "content": "a"}], "rejected": "b"},
     "1: chosen[0].role: unknown role 'robot'"),
    ({"prompt": "p", "chosen": "", "rejected": "b"}, "1: chosen: empty"),
    ({"prompt": "p", "chosen": 3, "rejected": "b"}, "1: chosen: expected a string or a non-empty list"),
    ({"prompt": [{"role": "user", "content": "p"}], "chosen": [{"role": "user", "content": "a"}],
      "rejected": [{"role": "assistant", "content": "b"}]}, "1: chosen: no assistant turn"),
]


@pytest.mark.parametrize("record,message", MALFORMED, ids=[m[1].split(": ")[1] for m in MALFORMED])
def test_a_malformed_pair_is_refused_with_file_line_field(tmp_path, record, message):
    path = write_pairs(tmp_path / "bad.jsonl", [record])
    with pytest.raises(UserError) as e:
        _load(path)
    assert str(e.value).startswith(f"{path}:{message}")


def test_an_implicit_pair_with_nothing_shared_is_refused(tmp_path):
    path = write_pairs(tmp_path / "i.jsonl", [{"chosen": "yes", "rejected": "no"}])
    with pytest.raises(UserError, match=r"i.jsonl:1: chosen, rejected: no shared opening text"):
        _load(path)


def test_a_malformed_line_stops_the_run_before_anything_is_written(workspace, capsys):
    good = pair_records(12)
    lines = [json.dumps(r) for r in good]
    lines[7] = json.dumps({"prompt": good[7]["prompt"], "chosen": good[7]["chosen"]})
    (workspace / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    s = pref_session(workspace, "bad")
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].endswith("pairs.jsonl:8: rejected: missing")
    assert list((workspace / "runs").iterdir()) == []


def test_truncation_is_counted_and_said(workspace, capsys, tok):
    rows = pair_records(20)
    for r in rows[:3]:  # prompts that fill max_length: left out
        r["prompt"][0]["content"] += " word" * 60
    for r in rows[3:5]:  # completions cut at max_length
        r["chosen"][0]["content"] += " tail" * 40
    write_pairs(workspace / "long.jsonl", rows)
    s = pref_session(workspace, "trunc", data="long.jsonl", steps=2)
    code, out, err = run_cli(["run", str(s)], capsys)
    assert code == 0, err
    run_dir = Path(out.strip())
    start = next(json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()
                 if json.loads(x)["kind"] == "start")
    assert start["long_prompts"] == 3 and start["truncated"] == 2
    assert start["train_examples"] + start["val_examples"] == 17
    assert "pairs left out: their prompt fills max_length = 40" in err
    assert "with a completion cut at max_length = 40" in err


def test_a_prompt_without_a_token_of_its_own_is_refused():
    class Whole:  # a tokenizer that merges the prompt into the completion's first token
        eos_token = "</s>"

        def __call__(self, text, **kw):
            return {"input_ids": [hash(text) % 1000]}

    rec = PD.PairRecord("p.jsonl:3", False, " ", "yes", "no")
    with pytest.raises(UserError, match=r"^p.jsonl:3: prompt: no token of the prompt stays before the completions"):
        PD.encode_all([rec], Whole(), 40)
