"""Causal-LM data from records (lm_records.py reads them): tokens, loss masks, packing,
batches.

The three formats (``Record.fmt``) become tokens so:
  text               plain continuation; every token is trained.
  prompt-completion  prompt, completion and the end-of-sequence token, concatenated.
  messages           rendered with the tokenizer's chat template; a tokenizer without one
                     gets DEFAULT_CHAT_TEMPLATE.
Loss masks: with ``loss_on = "completion"`` only the completion / the assistant turns'
content and their end-of-turn token are trained; ``"all"`` trains every token. Each piece
of text is tokenised on its own, so a mask covers exactly the tokens of its text.

Packing (``packing = true``) puts whole examples into rows of ``max_length`` tokens
(first-fit decreasing: a pure function of the lengths, hence of the seed that split the
data). A packed batch carries position ids that restart per example and a 4D additive
attention mask that is causal inside each example and blocks everything across them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tuneterm.engine.lm_records import Record
from tuneterm.errors import UserError

IGNORE = -100
# For a tokenizer without a chat template (the tiny models' WordPiece): one block per turn,
# the role in <|...|>, the content, the end-of-turn token, a newline.
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class Example:
    ids: list  # token ids
    labels: list  # per position: the target id of the next token, or IGNORE
    prompt_ids: list  # what generation starts from (samples)
    prompt: str  # readable prompt (samples.jsonl)
    reference: str  # the text a sample should produce

    @property
    def trained(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


class Examples:
    """One example per unit (no packing)."""

    def __init__(self, examples: list) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def rows(self, indices) -> list:
        return [[self.examples[int(i)]] for i in indices]


class Packed:
    """Rows of whole examples, each row at most ``width`` tokens; one unit per row."""

    def __init__(self, examples: list, width: int) -> None:
        self.examples = examples
        self.width = width
        self.packs = pack([len(e.ids) for e in examples], width)

    def __len__(self) -> int:
        return len(self.packs)

    def rows(self, indices) -> list:
        return [[self.examples[j] for j in self.packs[int(i)]] for i in indices]


# -- encoding -----------------------------------------------------------------------------

def prepare_tokenizer(tok) -> None:
    """An end-of-sequence token and a chat template for every tokenizer (WordPiece has
    neither: [SEP] ends a turn, DEFAULT_CHAT_TEMPLATE renders messages)."""
    if tok.eos_token is None:
        tok.eos_token = tok.sep_token or tok.pad_token
    if not getattr(tok, "chat_template", None):
        tok.chat_template = DEFAULT_CHAT_TEMPLATE


def _chat(tok, messages: list, generation: bool = False, where: str = "") -> str:
    """The conversation rendered by the tokenizer's chat template. A template may refuse a
    conversation (Gemma's raises on a system turn) or not parse at all: UserError naming
    the record ``where`` and the template's own message."""
    if not messages:
        return ""
    try:
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    except Exception as e:  # jinja2's errors, and whatever the template's code raises
        why = str(e).strip().splitlines()
        raise UserError(f"{where}: messages: the chat template raised {type(e).__name__}"
                        + (f": {why[0]}" if why else "")) from None


def segments(rec: Record, tok) -> list:
    """(text, trained) pieces whose concatenation is the whole example."""
    eos = tok.eos_token
    if rec.fmt == "text":
        return [(rec.text + eos, True)]
    if rec.fmt == "prompt-completion":
        return [(rec.prompt, False), (rec.completion + eos, True)]
    out, done = [], ""
    for i, m in enumerate(rec.messages):
        full = _chat(tok, rec.messages[: i + 1], where=rec.where)
        if not full.startswith(done):
            raise UserError(f"{rec.where}: messages: the chat template does not render turns as a prefix "
                            "of the conversation; use format = 'prompt-completion'")
        if m["role"] != "assistant":
            out.append((full[len(done):], False))
        else:
            head = _chat(tok, rec.messages[:i], generation=True, where=rec.where)
            head = head[len(done):] if head.startswith(done) and full.startswith(head) else ""
            body = full[len(done) + len(head):]
            cut = body.rfind(eos) + len(eos) if eos and eos in body else len(body)
            out += [(head, False), (body[:cut], True), (body[cut:], False)]
        done = full
    return [(t, trained) for t, trained in out if t]


def encode(rec: Record, tok, max_length: int, loss_on: str) -> tuple[Example, bool]:
    """The example (truncated to ``max_length``) and whether its prompt alone was longer
    while only the completion is trained (with ``loss_on = "all"`` the prompt's own tokens
    are trained: a long one is cut like any other text)."""
    ids: list = []
    mask: list = []
    prompt_len = None
    for text, trained in segments(rec, tok):
        piece = tok(text, add_special_tokens=False)["input_ids"]
        if trained and prompt_len is None:
            prompt_len = len(ids)
        ids += piece
        mask += [trained or loss_on == "all"] * len(piece)
    too_long = loss_on != "all" and prompt_len is not None and prompt_len > max_length
    ids, mask = ids[:max_length], mask[:max_length]
    labels = [ids[t + 1] if mask[t + 1] else IGNORE for t in range(len(ids) - 1)] + [IGNORE]
    if rec.fmt == "text":
        cut = min(16, max(1, len(ids) // 2))
        prompt_ids, prompt = ids[:cut], tok.decode(ids[:cut])
        reference = tok.decode(ids[cut:], skip_special_tokens=True)
    elif rec.fmt == "prompt-completion":
        prompt_ids, prompt, reference = ids[: prompt_len or len(ids)], rec.prompt, rec.completion
    else:
        last = max(i for i, m in enumerate(rec.messages) if m["role"] == "assistant")
        head = _chat(tok, rec.messages[:last], generation=True, where=rec.where)
        prompt_ids = tok(head, add_special_tokens=False)["input_ids"][:max_length]
        users = [m["content"] for m in rec.messages[:last] if m["role"] == "user"]
        prompt, reference = (users[-1] if users else ""), rec.messages[last]["content"]
    return Example(ids, labels, prompt_ids, prompt, reference), too_long


def encode_all(records: list, tok, max_length: int, loss_on: str, *, strict: bool) -> tuple[list, dict]:
    """Examples with at least one trained token, and counts of the others. ``strict``:
    a prompt longer than ``max_length`` is an error (user files); else it is dropped."""
    out, untrained, long_prompts, truncated = [], 0, 0, 0
    for rec in records:
        ex, too_long = encode(rec, tok, max_length, loss_on)
        if too_long:
            if strict:
                field_ = "messages" if rec.fmt == "messages" else "prompt"
                raise UserError(f"{rec.where}: {field_}: the prompt is longer than max_length = {max_length} tokens "
                                "(nothing left to train on); shorten it or raise data.max_length")
            long_prompts += 1
            continue
        truncated += len(ex.ids) == max_length
        if ex.trained == 0:
            untrained += 1
            continue
        out.append(ex)
    return out, {"no_trained_tokens": untrained, "long_prompts_dropped": long_prompts, "truncated": truncated}


def left_out(info: dict, total: int, max_length: int) -> str | None:
    """One line saying how many of ``total`` examples ``encode_all`` left out and why
    (``info``: its counts), or None when it kept them all. With ``loss_on = "completion"``
    an example keeps no trained token exactly when its prompt fills ``max_length``: a longer
    prompt is counted apart (or refused, in a user's file)."""
    long_prompts, untrained = info.get("long_prompts_dropped", 0), info["no_trained_tokens"]
    if not long_prompts + untrained:
        return None
    why = []
    if long_prompts:
        why.append(f"{long_prompts} with a prompt longer than that")
    if untrained:
        why.append(f"{untrained} with a prompt of exactly {max_length} tokens (no room left for a trained token)")
    return f"{long_prompts + untrained} of {total} examples left out at max_length = {max_length}: {', '.join(why)}"


# -- packing and batches ------------------------------------------------------------------

def pack(lengths: list, width: int) -> list:
    """First-fit decreasing: lists of example indices, each list's lengths summing to at
    most ``width``; deterministic (ties keep the index order)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list = []
    room: list = []
    for i in order:
        n = lengths[i]
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(width - n)
    return [sorted(r) for r in rows]


def padding_share(lengths: list, width: int, packs: list | None = None) -> float:
    """The share of padding in rows of ``width`` tokens: one example a row, or ``packs``."""
    rows = len(packs) if packs is not None else len(lengths)
    return 1.0 - sum(lengths) / (rows * width) if rows else 0.0


def collate(rows: list, pad_id: int, device, packed: bool) -> dict:
    """A batch from rows of examples, padded to the longest row. Packed: position ids
    restart per example and a 4D additive mask (B, 1, T, T) blocks attention across
    examples (padding attends only to itself)."""
    width = max(sum(len(e.ids) for e in row) for row in rows)
    b = len(rows)
    ids = np.full((b, width), pad_id, dtype=np.int64)
    labels = np.full((b, width), IGNORE, dtype=np.int64)
    pos = np.zeros((b, width), dtype=np.int64)
    seg = np.full((b, width), -1, dtype=np.int64)
    for j, row in enumerate(rows):
        t = 0
        for k, e in enumerate(row):
            n = len(e.ids)
            ids[j, t:t + n] = e.ids
            labels[j, t:t + n] = e.labels
            pos[j, t:t + n] = np.arange(n)
            seg[j, t:t + n] = k
            t += n
    batch = {"input_ids": torch.from_numpy(ids).to(device), "labels": torch.from_numpy(labels).to(device)}
    if packed:
        s = torch.from_numpy(seg)
        same = (s[:, :, None] == s[:, None, :]) & (s[:, :, None] >= 0)
        allowed = (same & torch.ones(width, width, dtype=torch.bool).tril()) | torch.eye(width, dtype=torch.bool)
        mask = torch.zeros(b, 1, width, width).masked_fill(~allowed[:, None], torch.finfo(torch.float32).min)
        batch["attention_mask"] = mask.to(device)
        batch["position_ids"] = torch.from_numpy(pos).to(device)
    else:
        batch["attention_mask"] = torch.from_numpy((seg >= 0).astype(np.int64)).to(device)
    return batch
