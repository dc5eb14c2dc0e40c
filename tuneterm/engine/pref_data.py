"""Preference data: two completions of one prompt, the chosen one preferred.

Record formats (TRL's; ``[data] format``, ``auto`` from the first record's keys):
  prompt-chosen-rejected  ``prompt_field``, ``chosen_field``, ``rejected_field``: three strings,
                          or three lists of {role, content} (conversational: rendered with
                          the tokenizer's chat template)
  chosen-rejected         the prompt implicit: the two completions' shared opening turns
                          (strings: their common prefix, as TRL's ``extract_prompt``)

Tokenisation is TRL's DPOTrainer's: the prompt alone and the prompt followed by each
completion are tokenised whole (strings with the tokenizer's own special tokens and an
end-of-sequence token after each completion; conversations through the chat template, the
prompt with the generation prompt), and the completion starts where the prompt's tokens
and the whole's part. Truncation is TRL's ``keep_start``: a pair whose prompt fills
``max_length`` is left out (counted), each completion is cut to the room the prompt leaves
(counted as truncated).

A batch puts each pair in one row — prompt, chosen, rejected — with a 4D attention mask
in which each completion sees the prompt and itself only and position ids that restart
where the prompt ends: the prompt's tokens go through the model once, not twice, and each
completion's log-probabilities are those of prompt + completion alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from tuneterm.engine import lm_data as LM
from tuneterm.engine import lm_records as R
from tuneterm.errors import UserError

FORMATS = ("prompt-chosen-rejected", "chosen-rejected")


@dataclass
class PairRecord:
    where: str  # file:line
    chat: bool  # message lists (the chat template) rather than strings
    prompt: object  # str | list of {role, content}
    chosen: object
    rejected: object


@dataclass
class Pair:
    prompt_ids: list
    chosen_ids: list  # the completion's tokens (after truncation)
    rejected_ids: list
    prompt: str  # readable, for samples.jsonl
    chosen: str
    rejected: str


def _readable(v) -> str:
    if isinstance(v, str):
        return v
    users = [m["content"] for m in v if m["role"] != "assistant"] or [m["content"] for m in v]
    return users[-1] if users else ""


# -- reading ------------------------------------------------------------------------------

def detect_format(obj: dict, spec) -> str:
    if spec.format != "auto":
        return spec.format
    if spec.prompt_field in obj:
        return "prompt-chosen-rejected"
    if spec.chosen_field in obj or spec.rejected_field in obj:
        return "chosen-rejected"
    raise UserError(f"data.format: 'auto' cannot tell the format from the first record's keys "
                    f"({', '.join(map(repr, obj)) or 'none'}); a preference record has {spec.chosen_field!r} and "
                    f"{spec.rejected_field!r} (and {spec.prompt_field!r}, or the prompt is their shared opening)")


def _value(where: str, obj: dict, key: str):
    """A string, or a checked list of {role, content} (in a CSV cell: the list as JSON)."""
    if key not in obj:
        raise UserError(f"{where}: {key}: missing")
    v = obj[key]
    if isinstance(v, str) and v.lstrip().startswith("[{"):
        try:
            v = json.loads(v)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: {key}: not JSON: {e.msg}") from None
    if isinstance(v, str):
        if not v.strip():
            raise UserError(f"{where}: {key}: empty")
        return v
    if not isinstance(v, list) or not v:
        raise UserError(f"{where}: {key}: expected a string or a non-empty list of {{role, content}}, "
                        f"got {type(v).__name__}")
    for i, m in enumerate(v):
        at = f"{where}: {key}[{i}]"
        if not isinstance(m, dict):
            raise UserError(f"{at}: expected an object {{role, content}}, got {type(m).__name__}")
        if m.get("role") not in R.ROLES:
            raise UserError(f"{at}.role: " + (f"unknown role {m['role']!r}; one of {', '.join(R.ROLES)}"
                                              if "role" in m else "missing"))
        if not isinstance(m.get("content"), str):
            raise UserError(f"{at}.content: " + ("missing" if "content" not in m else
                                                 f"expected a string, got {type(m['content']).__name__}"))
        if not m["content"].strip():
            raise UserError(f"{at}.content: empty")
    return [{"role": m["role"], "content": m["content"]} for m in v]


def _shared_prompt(where: str, chosen, rejected, spec) -> tuple:
    """TRL's implicit prompt: the shared opening turns (messages) or characters (strings,
    backing off before a space)."""
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    if isinstance(chosen, str) and 0 < n < len(chosen) and chosen[n - 1] == " ":
        n -= 1
    if n == 0:
        raise UserError(f"{where}: {spec.chosen_field}, {spec.rejected_field}: no shared opening "
                        f"{'turn' if isinstance(chosen, list) else 'text'}, so no prompt (format chosen-rejected: "
                        "the prompt is what the two share); give a prompt field")
    return chosen[:n], chosen[n:], rejected[n:]


def to_pair(where: str, obj: dict, fmt: str, spec) -> PairRecord:
    """A checked pair; UserError ``file:line: field: message`` on a malformed one."""
    c_key, r_key = spec.chosen_field, spec.rejected_field
    chosen, rejected = _value(where, obj, c_key), _value(where, obj, r_key)
    prompt = _value(where, obj, spec.prompt_field) if fmt == "prompt-chosen-rejected" else None
    first, kind = (spec.prompt_field, prompt) if prompt is not None else (c_key, chosen)
    for key, v in ((c_key, chosen), (r_key, rejected)):
        if isinstance(v, list) != isinstance(kind, list):
            want = "a list of {role, content}" if isinstance(kind, list) else "a string"
            raise UserError(f"{where}: {key}: expected {want} like {first}, got "
                            f"{'a list' if isinstance(v, list) else 'a string'}")
    if chosen == rejected:
        raise UserError(f"{where}: {r_key}: the same as {c_key} (a pair needs two different completions)")
    if prompt is None:
        prompt, chosen, rejected = _shared_prompt(where, chosen, rejected, spec)
    if isinstance(chosen, list):
        for key, v in ((c_key, chosen), (r_key, rejected)):
            if not v or not any(m["role"] == "assistant" for m in v):
                raise UserError(f"{where}: {key}: no assistant turn after the prompt (nothing to compare)")
    return PairRecord(where, isinstance(chosen, list), prompt, chosen, rejected)


def records_from(path, spec, what: str, fmt: str | None = None) -> tuple[str, list]:
    raw = R.read_records(path, what)
    fmt = fmt or detect_format(raw[0][1], spec)
    if fmt not in FORMATS:
        raise UserError(f"data.format: {fmt!r} is not a preference format; one of auto, {', '.join(FORMATS)}")
    return fmt, [to_pair(where, obj, fmt, spec) for where, obj in raw]


# -- encoding -----------------------------------------------------------------------------

def _common(a: list, b: list) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def tokenize(rec: PairRecord, tok) -> tuple[list, list, list]:
    """(prompt, chosen, rejected) token ids, untruncated, as TRL's DPOTrainer makes them."""
    if rec.chat:
        def ids(messages, generation=False):
            return tok(LM._chat(tok, messages, generation, where=rec.where), add_special_tokens=False)["input_ids"]

        p_ids, c_ids, r_ids = ids(rec.prompt, True), ids(rec.prompt + rec.chosen), ids(rec.prompt + rec.rejected)
    else:
        eos = tok.eos_token or ""

        def ended(text: str) -> str:
            return text if text.endswith(eos) else text + eos

        p_ids = tok(rec.prompt)["input_ids"]
        c_ids = tok(rec.prompt + ended(rec.chosen))["input_ids"]
        r_ids = tok(rec.prompt + ended(rec.rejected))["input_ids"]
    n = min(_common(p_ids, c_ids), _common(p_ids, r_ids))
    return p_ids[:n], c_ids[n:], r_ids[n:]


def encode_all(records: list, tok, max_length: int) -> tuple[list, dict]:
    """The pairs kept at ``max_length``, and the counts: ``long_prompts`` (a prompt that
    fills max_length: left out, as TRL drops it), ``truncated`` (a completion cut)."""
    out, long_prompts, truncated = [], 0, 0
    for rec in records:
        p, c, r = tokenize(rec, tok)
        if not p:  # a completion's first token is scored from the prompt's last position
            raise UserError(f"{rec.where}: prompt: no token of the prompt stays before the completions (its "
                            "text merges into theirs when tokenised); end it on a word boundary")
        for key, ids in (("chosen", c), ("rejected", r)):
            if not ids:
                raise UserError(f"{rec.where}: {key}: no tokens after the prompt")
        if len(p) >= max_length:
            long_prompts += 1
            continue
        room = max_length - len(p)
        truncated += len(c) > room or len(r) > room
        out.append(Pair(p, c[:room], r[:room], _readable(rec.prompt), _readable(rec.chosen), _readable(rec.rejected)))
    return out, {"long_prompts": long_prompts, "truncated": truncated}


def left_out(info: dict, total: int, max_length: int) -> str | None:
    """One line saying how many of ``total`` pairs were left out or cut, or None."""
    parts = []
    if info["long_prompts"]:
        parts.append(f"{info['long_prompts']} of {total} pairs left out: their prompt fills max_length = "
                     f"{max_length} (no room for a completion token)")
    if info["truncated"]:
        parts.append(f"{info['truncated']} pairs with a completion cut at max_length = {max_length}")
    return "; ".join(parts) or None


# -- batches ------------------------------------------------------------------------------

class Pairs:
    """The pairs of one split, one unit each; ``ref``: the reference model's log-probs of
    each pair's (chosen, rejected), when they were computed ahead (reference = precompute)."""

    def __init__(self, pairs: list) -> None:
        self.pairs = pairs
        self.ref: tuple | None = None  # (chosen [N], rejected [N]) float32 tensors

    def __len__(self) -> int:
        return len(self.pairs)


def collate(dataset: Pairs, indices, pad_id: int, device) -> dict:
    """One row per pair: prompt, chosen, rejected (padded to the longest row). Every tensor
    is row-major, so that a rank's rows of a micro-batch are ``t[a:b]`` of each (micro.py):
    ``target_ids`` are a row's completion tokens (chosen, then rejected), ``target_at`` the
    position in its row whose next-token log-prob scores each, ``target_side`` 0 (chosen),
    1 (rejected) or -1 (padding); ``n_tokens`` each row's (chosen, rejected) lengths."""
    pairs = [dataset.pairs[int(i)] for i in indices]
    b = len(pairs)
    width = max(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    n_target = max(len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    ids = np.full((b, width), pad_id, dtype=np.int64)
    pos = np.zeros((b, width), dtype=np.int64)
    allowed = np.zeros((b, width, width), dtype=bool)
    target_ids = np.zeros((b, n_target), dtype=np.int64)
    target_at = np.zeros((b, n_target), dtype=np.int64)
    target_side = np.full((b, n_target), -1, dtype=np.int64)
    for j, p in enumerate(pairs):
        n_p, n_c, n_r = len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)
        ids[j, :n_p + n_c + n_r] = p.prompt_ids + p.chosen_ids + p.rejected_ids
        pos[j, :n_p + n_c] = np.arange(n_p + n_c)
        pos[j, n_p + n_c:n_p + n_c + n_r] = np.arange(n_p, n_p + n_r)
        allowed[j, :n_p + n_c, :n_p + n_c] = np.tril(np.ones((n_p + n_c, n_p + n_c), dtype=bool))
        r0 = n_p + n_c
        allowed[j, r0:r0 + n_r, :n_p] = True  # the rejected completion sees the prompt ...
        allowed[j, r0:r0 + n_r, r0:r0 + n_r] = np.tril(np.ones((n_r, n_r), dtype=bool))  # ... and itself
        for t in range(n_p + n_c + n_r, width):
            allowed[j, t, t] = True  # padding attends to itself only (no empty softmax)
        # the log-prob of a completion's first token is read at the prompt's last position
        target_at[j, :n_c + n_r] = [n_p - 1, *range(n_p, n_p + n_c - 1), n_p - 1, *range(r0, r0 + n_r - 1)]
        target_ids[j, :n_c + n_r] = p.chosen_ids + p.rejected_ids
        target_side[j, :n_c], target_side[j, n_c:n_c + n_r] = 0, 1
    mask = torch.zeros(b, 1, width, width).masked_fill(~torch.from_numpy(allowed)[:, None],
                                                       torch.finfo(torch.float32).min)
    batch = {"input_ids": torch.from_numpy(ids).to(device), "attention_mask": mask.to(device),
             "position_ids": torch.from_numpy(pos).to(device),
             "target_ids": torch.from_numpy(target_ids).to(device),
             "target_at": torch.from_numpy(target_at).to(device),
             "target_side": torch.from_numpy(target_side).to(device),
             "n_tokens": torch.tensor([[len(p.chosen_ids), len(p.rejected_ids)] for p in pairs],
                                      dtype=torch.float32, device=device)}
    if dataset.ref is not None:
        at = torch.as_tensor([int(i) for i in indices])
        batch["ref_chosen"] = dataset.ref[0][at].to(device)
        batch["ref_rejected"] = dataset.ref[1][at].to(device)
    return batch
