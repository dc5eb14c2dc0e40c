"""Layer groups: the units of freezing, found generically from the module tree.

The transformer blocks are the largest ``nn.ModuleList`` whose children all share one
class (BERT's ``encoder.layer``, GPT-2's ``transformer.h``, Llama's ``model.layers``).
Block i becomes the group ``layer.i``; every parameter registered before the first block
is ``embeddings``; every parameter after the blocks (final norm, pooler, classifier) is
``head``. Names are therefore the same across architectures.

A group has two switches, and a parameter trains when both allow it:
  frozen      ``freeze`` / ``unfreeze`` (the live edits). Full fine-tuning: the whole group.
              LoRA: the group's adapters (and its base too while it trains beside them).
  train_base  whether the group's base (non-adapter) weights train. Always on for full
              fine-tuning; in LoRA mode off unless the group is named in ``[lora] train_base``.

Tied weights (GPT-2, SmolLM2: the output head *is* the token-embedding matrix) are one
tensor held by two groups: it is listed once, in the group where it is registered first
(``embeddings``), and the other group (``head``) records it in ``shared``. It trains only
while *no* group holding it is frozen (freezing ``embeddings`` or ``head`` freezes the
shared matrix; unfreezing one leaves it frozen while the other is still frozen) and, in
LoRA mode, while either holder trains its base.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Parameter-name markers of trainable adapter weights (PEFT's naming). ``modules_to_save``
# holds PEFT's trainable copy of a fully trained module (a classifier head);
# ``original_module`` its frozen original, which the forward pass never uses.
ADAPTER_MARKERS = (".lora_A.", ".lora_B.", ".lora_embedding_A.", ".lora_embedding_B.", ".lora_magnitude_vector.",
                   ".modules_to_save.")
SHADOW_MARKER = ".original_module."


def is_adapter(qname: str) -> bool:
    return any(m in qname for m in ADAPTER_MARKERS)


@dataclass
class LayerGroup:
    name: str
    params: list = field(default_factory=list)  # list[(qualified name, Parameter)], each parameter once
    shared: list = field(default_factory=list)  # [(alias name, Parameter)] tied tensors listed in another group
    adapter: set = field(default_factory=set)   # qualified names of the adapter parameters (LoRA mode)
    frozen: bool = False
    train_base: bool = True
    base_trained: bool = True  # has the base ever trained (LoRA checkpoints must then keep it)

    @property
    def numel(self) -> int:
        return sum(p.numel() for _, p in self.params)

    def adapter_params(self) -> list:
        return [(n, p) for n, p in self.params if n in self.adapter]

    def base_params(self) -> list:
        return [(n, p) for n, p in self.params if n not in self.adapter]

    def trainable_numel(self) -> int:
        return sum(p.numel() for _, p in self.params if p.requires_grad)


def _find_blocks(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList] | None:
    best = None
    best_n = -1
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0:
            kinds = {type(m) for m in mod}
            if len(kinds) != 1:
                continue
            n = sum(p.numel() for p in mod.parameters())
            if n > best_n:
                best, best_n = (name, mod), n
    return best


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's transformer blocks, the modules layer.0 .. layer.N-1 are (FSDP shards
    each); [] for a model without such a stack."""
    found = _find_blocks(model)
    return list(found[1]) if found else []


def layer_groups(model: torch.nn.Module) -> list[LayerGroup]:
    """embeddings, layer.0 .. layer.N-1, head — in that order, every parameter in one group.

    A model with PEFT adapters gives LoRA-mode groups (base weights not trained); the
    parameters' ``requires_grad`` is set from the groups' switches either way.
    """
    found = _find_blocks(model)
    prefix = f"{found[0]}." if found else None
    emb, head = LayerGroup("embeddings"), LayerGroup("head")
    blocks = [LayerGroup(f"layer.{i}") for i in range(len(found[1]))] if found else []
    seen_block = False
    owner: dict[int, LayerGroup] = {}
    for qname, p in model.named_parameters(remove_duplicate=False):
        if SHADOW_MARKER in qname:
            continue
        if prefix and qname.startswith(prefix):
            g = blocks[int(qname[len(prefix):].split(".", 1)[0])]
            seen_block = True
        elif seen_block or not found:
            g = head
        else:
            g = emb
        if id(p) in owner:  # a tied tensor met again under another name
            if owner[id(p)] is not g:
                g.shared.append((qname, p))
            continue
        owner[id(p)] = g
        g.params.append((qname, p))
        if is_adapter(qname):
            g.adapter.add(qname)
    groups = [g for g in [emb, *blocks, head] if g.params or g.shared]
    if any(g.adapter for g in groups):
        for g in groups:
            g.train_base = g.base_trained = False
    _apply(groups)
    return groups


def is_lora(groups: list[LayerGroup]) -> bool:
    return any(g.adapter for g in groups)


def _holders(groups: list[LayerGroup]) -> dict[int, list[LayerGroup]]:
    held: dict[int, list[LayerGroup]] = {}
    for g in groups:
        for _, p in [*g.params, *g.shared]:
            held.setdefault(id(p), []).append(g)
    return held


def _wanted(groups: list[LayerGroup], frozen=None, train_base=None) -> list[tuple]:
    """[(parameter, whether it trains)] under these switches: the names of the frozen groups
    and (LoRA) of the groups training their base; None: each switch as it is now."""
    held = _holders(groups)
    lora = is_lora(groups)
    fz = {g.name: g.frozen if frozen is None else g.name in frozen for g in groups}
    tb = {g.name: g.train_base if train_base is None or not lora else g.name in train_base for g in groups}
    out = []
    for g in groups:
        for qname, p in g.params:
            holders = held[id(p)]
            out.append((p, not any(fz[h.name] for h in holders)
                        and (qname in g.adapter or any(tb[h.name] for h in holders))))
    return out


def trainable_numel(groups: list[LayerGroup], frozen=None, train_base=None) -> int:
    """How many parameters would train with these switches (see ``_wanted``); changes nothing."""
    return sum(p.numel() for p, want in _wanted(groups, frozen, train_base) if want)


def untrained_reason(groups: list[LayerGroup], frozen=None, train_base=None) -> str | None:
    """None when something would train with these switches; else why nothing would, in
    words. Counted, not read from group names: a LoRA group without adapters trains nothing
    while unfrozen (a classifier's embeddings; a language model's head)."""
    if trainable_numel(groups, frozen, train_base):
        return None
    cold = set(frozen_names(groups) if frozen is None else frozen)
    left = [g.name for g in groups if g.name not in cold]
    if not left:
        return "every layer group is frozen"
    what = ", ".join(left)
    if is_lora(groups):
        return f"the unfrozen groups ({what}) hold no adapters and none of them is in lora.train_base"
    return f"the unfrozen groups ({what}) hold only weights tied to frozen groups"


def _apply(groups: list[LayerGroup]) -> tuple[list, list]:
    """Set every parameter's requires_grad from the switches; return (unfrozen, frozen):
    the parameters whose state changed each way."""
    on, off = [], []
    for p, want in _wanted(groups):
        if p.requires_grad != want:
            p.requires_grad_(want)
            if want:
                on.append(p)
            else:
                p.grad = None
                off.append(p)
    return on, off


def _check(groups: list[LayerGroup], names) -> dict[str, LayerGroup]:
    by_name = {g.name: g for g in groups}
    for n in names:
        if n not in by_name:
            raise KeyError(f"unknown layer group {n!r}; this model has {', '.join(by_name)}")
    return by_name


def group_names(groups: list[LayerGroup]) -> list[str]:
    return [g.name for g in groups]


def set_frozen(groups: list[LayerGroup], names, frozen: bool) -> list:
    """Freeze or unfreeze the named groups; return the parameters whose state changed
    (freezing only freezes, unfreezing only unfreezes)."""
    by_name = _check(groups, names)
    for n in names:
        by_name[n].frozen = frozen
    on, off = _apply(groups)
    return off if frozen else on


def set_train_base(groups: list[LayerGroup], names) -> tuple[list, list]:
    """LoRA mode: exactly the named groups train their base weights beside the adapters.
    Returns (parameters now trainable, parameters now frozen)."""
    _check(groups, names)
    wanted = set(names)
    for g in groups:
        g.train_base = g.name in wanted
        g.base_trained = g.base_trained or g.train_base
    return _apply(groups)


def frozen_names(groups: list[LayerGroup]) -> list[str]:
    return [g.name for g in groups if g.frozen]


def train_base_names(groups: list[LayerGroup]) -> list[str]:
    return [g.name for g in groups if g.train_base] if is_lora(groups) else []


def _short(qname: str) -> str:
    return qname.removeprefix("base_model.model.")  # PEFT's wrapper prefix


def tied_note(groups: list[LayerGroup]) -> str | None:
    """One sentence on tied tensors (None when the model has none)."""
    pairs = []
    held = _holders(groups)
    for g in groups:
        for alias, p in g.shared:
            first = held[id(p)][0]
            owner_name = next(n for n, q in first.params if q is p)
            pairs.append(f"{_short(alias)} ({g.name}) is {_short(owner_name)} ({first.name})")
    if not pairs:
        return None
    note = ("tied weights: " + "; ".join(pairs) + " — one tensor, counted once: freezing either group "
            "freezes it, and it trains again only when both are unfrozen")
    if is_lora(groups):
        note += " and one of them is in lora.train_base"
    return note


def describe(groups: list[LayerGroup]) -> list[dict]:
    """[{"name", "params", "frozen", "trainable", ...}], the form written to RUN_DIR/layers.json.
    LoRA mode adds "adapter_params", "base_params" and "train_base"; a group holding a tied
    tensor of another group names it in "tied"."""
    held = _holders(groups)
    lora = is_lora(groups)
    out = []
    for g in groups:
        row = {"name": g.name, "params": g.numel, "frozen": g.frozen, "trainable": g.trainable_numel()}
        if lora:
            row["adapter_params"] = sum(p.numel() for _, p in g.adapter_params())
            row["base_params"] = row["params"] - row["adapter_params"]
            row["train_base"] = g.train_base
        tied = sorted({h.name for _, p in [*g.params, *g.shared] for h in held[id(p)] if h is not g})
        if tied:
            row["tied"] = tied
        out.append(row)
    return out
