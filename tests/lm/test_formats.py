"""Causal-LM data: each format from fixture files, loss masks that cover exactly the
completion / assistant text (+ the end-of-turn token), malformed records refused with
file:line: field, truncation counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


from tuneterm.engine import lm_data as LM
from tuneterm.engine import lm_records
from tuneterm.errors import UserError
from tuneterm.session.schema import DataSpec

FIXTURES = Path(__file__).parent / "fixtures"


def _trained_text(tok, ex) -> str:
    return tok.decode([ex.ids[t + 1] for t, lab in enumerate(ex.labels) if lab != LM.IGNORE])


def _load(path, **kw):
    spec = DataSpec(source=str(path), **kw)
    return lm_records.records_from(path, spec, "data.source")


def test_auto_detects_each_format():
    assert _load(FIXTURES / "chat.jsonl")[0] == "messages"
    assert _load(FIXTURES / "pc.jsonl")[0] == "prompt-completion"
    assert _load(FIXTURES / "text.csv")[0] == "text"
    assert _load(FIXTURES / "alpaca.json", prompt_template="{instruction}\n\n{input}", completion_field="output")[0] \
        == "prompt-completion"


def test_messages_mask_is_the_assistant_turns(tok):
    _, recs = _load(FIXTURES / "chat.jsonl")
    ex, _ = LM.encode(recs[1], tok, 256, "completion")
    assert _trained_text(tok, ex) == "an apple. [SEP] a pear. [SEP]"
    # the labels are the next token: position t is trained iff token t+1 is assistant text
    assert ex.labels[-1] == LM.IGNORE and ex.trained == len(tok("An apple. A pear.", add_special_tokens=False)
                                                             ["input_ids"]) + 2
    ex, _ = LM.encode(recs[0], tok, 256, "completion")
    assert _trained_text(tok, ex) == "blue on a clear day. [SEP]"
    assert ex.prompt == "What colour is the sky?" and ex.reference == "Blue on a clear day."
    assert tok.decode(ex.prompt_ids).endswith("< | assistant | >")


def test_loss_on_all_trains_every_token(tok):
    _, recs = _load(FIXTURES / "chat.jsonl")
    ex, _ = LM.encode(recs[0], tok, 256, "all")
    assert ex.trained == len(ex.ids) - 1


def test_prompt_completion_and_alpaca_template(tok):
    _, recs = _load(FIXTURES / "pc.jsonl")
    ex, _ = LM.encode(recs[0], tok, 64, "completion")
    assert tok.decode(ex.ids) == "the capital of france is paris. [SEP]"
    assert _trained_text(tok, ex) == "paris. [SEP]"
    _, recs = _load(FIXTURES / "alpaca.json", prompt_template="{instruction}\n\n{input}", completion_field="output")
    assert recs[1].prompt == "Give a synonym.\n\nhappy" and recs[1].completion == "glad"
    assert recs[1].where.endswith("alpaca.json:3")
    ex, _ = LM.encode(recs[0], tok, 64, "completion")
    assert _trained_text(tok, ex) == "bonjour [SEP]"


def test_text_trains_everything_and_splits_a_sample_prompt(tok):
    _, recs = _load(FIXTURES / "text.csv")
    assert recs[2].where.endswith("text.csv:4")
    ex, _ = LM.encode(recs[0], tok, 64, "completion")
    assert _trained_text(tok, ex) == tok.decode(ex.ids[1:])
    assert ex.prompt_ids == ex.ids[: len(ex.prompt_ids)] and ex.reference


def _write(tmp_path, name, lines):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def _msgs(*ms):
    return json.dumps({"messages": list(ms)})


U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}


@pytest.mark.parametrize("line, message", [
    (_msgs({"content": "hi"}, A), "bad.jsonl:2: messages[0].role: missing"),
    (_msgs({"role": "robot", "content": "hi"}, A),
     "bad.jsonl:2: messages[0].role: unknown role 'robot'; one of system, user, assistant"),
    (_msgs(U, {"role": "assistant", "content": "  "}), "bad.jsonl:2: messages[1].content: empty"),
    (_msgs(U, {"role": "assistant", "content": ["x"]}), "bad.jsonl:2: messages[1].content: expected a string, got list"),
    (_msgs(U, {"role": "assistant"}), "bad.jsonl:2: messages[1].content: missing"),
    (_msgs(U), "bad.jsonl:2: messages: no assistant turn"),
    ('{"messages": [', "bad.jsonl:2: not JSON: Expecting value"),
    ('{"messages": "not json"}', "bad.jsonl:2: messages: not JSON"),
    ('[1, 2]', "bad.jsonl:2: expected an object (a record), got list"),
])
def test_malformed_messages_are_refused_with_file_line_field(tmp_path, line, message):
    p = _write(tmp_path, "bad.jsonl", [_msgs(U, A), line])
    with pytest.raises(UserError) as e:
        _load(p)
    assert str(e.value).startswith(str(tmp_path / message.split(":")[0]) + ":" + message.split(":", 1)[1])
    assert "\n" not in str(e.value)


def test_malformed_prompt_completion(tmp_path):
    p = _write(tmp_path, "pc.jsonl", ['{"prompt": "a", "completion": "b"}', '{"prompt": "a", "completion": 3}'])
    with pytest.raises(UserError, match=r"pc.jsonl:2: completion: expected a string, got int"):
        _load(p)
    p = _write(tmp_path, "al.jsonl", ['{"instruction": "a", "output": "b"}'])
    with pytest.raises(UserError, match=r"al.jsonl:1: input: missing \(data.prompt_template uses it\)"):
        _load(p, prompt_template="{instruction} {input}", completion_field="output")
    p = _write(tmp_path, "odd.jsonl", ['{"question": "a"}'])
    with pytest.raises(UserError, match=r"data.format: 'auto' cannot tell the format"):
        _load(p)
    p = tmp_path / "broken.json"
    p.write_text('[\n {"text": "a"},\n {"text": \n]\n')
    with pytest.raises(UserError, match=r"broken.json:4: not JSON"):
        _load(p)


def test_a_prompt_longer_than_max_length_is_refused(tmp_path, tok):
    p = _write(tmp_path, "long.jsonl", ['{"prompt": "short", "completion": "ok"}',
                                        json.dumps({"prompt": "word " * 40, "completion": "ok"})])
    _, recs = _load(p)
    with pytest.raises(UserError, match=r"long.jsonl:2: prompt: the prompt is longer than max_length = 16 tokens"):
        LM.encode_all(recs, tok, 16, "completion", strict=True)
    kept, info = LM.encode_all(recs, tok, 16, "completion", strict=False)
    assert len(kept) == 1 and info["long_prompts_dropped"] == 1


def test_truncation_that_leaves_no_trained_token_is_counted(tok):
    recs = [LM.Record("x:1", "prompt-completion", prompt="one two three four", completion="five six"),
            LM.Record("x:2", "prompt-completion", prompt="one two", completion="three four")]
    kept, info = LM.encode_all(recs, tok, 4, "completion", strict=True)
    assert [r.where for r in recs][1] == "x:2" and len(kept) == 1
    assert info["no_trained_tokens"] == 1 and info["truncated"] == 2
    assert _trained_text(tok, kept[0]) == "three four"  # [SEP] cut off


def test_default_chat_template_is_used_without_one(tok):
    assert tok.chat_template == LM.DEFAULT_CHAT_TEMPLATE and tok.eos_token == "[SEP]"
    text = tok.apply_chat_template([U, A], tokenize=False)
    assert text == "<|user|>\nhi[SEP]\n<|assistant|>\nhello[SEP]\n"


def test_loss_on_all_truncates_a_long_prompt_and_trains_it(tmp_path, tok):
    """With loss_on = "all" every token is trained, so a prompt past max_length still leaves
    max_length - 1 trained positions: the record is cut and kept, in a user file or not."""
    p = _write(tmp_path, "long.jsonl", ['{"prompt": "short", "completion": "ok"}',
                                        json.dumps({"prompt": "word " * 40, "completion": "ok"})])
    _, recs = _load(p)
    for strict in (True, False):
        kept, info = LM.encode_all(recs, tok, 16, "all", strict=strict)
        assert len(kept) == 2 and len(kept[1].ids) == 16 and kept[1].trained == 15
        assert info == {"no_trained_tokens": 0, "long_prompts_dropped": 0, "truncated": 1}
    long_chat = LM.Record("c:1", "messages", messages=[{"role": "user", "content": "word " * 40}, A])
    kept, _ = LM.encode_all([long_chat], tok, 16, "all", strict=True)
    assert len(kept) == 1 and kept[0].trained == 15


def test_what_was_left_out_adds_up_and_names_the_reason(tok):
    """Each left-out example is counted once, under the reason it was left out for."""
    recs = [LM.Record(f"x:{i}", "prompt-completion", prompt="word " * n, completion="done")
            for i, n in enumerate([40, 30, 16, 3])]  # two longer than 16, one of exactly 16, one kept
    kept, info = LM.encode_all(recs, tok, 16, "completion", strict=False)
    assert len(kept) == 1 and info["long_prompts_dropped"] == 2 and info["no_trained_tokens"] == 1
    line = LM.left_out(info, len(recs), 16)
    assert line == ("3 of 4 examples left out at max_length = 16: 2 with a prompt longer than that, "
                    "1 with a prompt of exactly 16 tokens (no room left for a trained token)")
    assert LM.left_out({"no_trained_tokens": 0, "long_prompts_dropped": 0}, 4, 16) is None


def test_a_chat_template_that_raises_names_the_record_and_its_message(tmp_path, tok):
    import copy

    raising = copy.deepcopy(tok)
    raising.chat_template = "{{ raise_exception('System role not supported') }}"
    _, recs = _load(FIXTURES / "chat.jsonl")
    with pytest.raises(UserError) as e:
        LM.encode_all(recs, raising, 64, "completion", strict=True)
    msg = str(e.value)
    assert msg.startswith(f"{FIXTURES / 'chat.jsonl'}:1: messages: the chat template raised ")
    assert msg.endswith("System role not supported") and "\n" not in msg
    raising.chat_template = "{% for m in messages %}{{ m['content'] }"  # does not even parse
    with pytest.raises(UserError, match=r"chat.jsonl:1: messages: the chat template raised TemplateSyntaxError: "):
        LM.encode_all(recs, raising, 64, "completion", strict=True)
