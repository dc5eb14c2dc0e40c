"""Layer groups: the units of freezing, found generically from the module tree.

The transformer blocks are the largest ``nn.ModuleList`` whose children all share one
class (BERT's ``encoder.layer``, GPT-2's ``transformer.h``, Llama's ``model.layers``).
Block i becomes the group ``layer.i``; every parameter registered before the first block
is ``embeddings``; every parameter after the blocks (final norm, pooler, classifier) is
``head``. Names are therefore the same across architectures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LayerGroup:
    name: str
    params: list = field(default_factory=list)  # list[(qualified name, Parameter)]

    @property
    def numel(self) -> int:
        return sum(p.numel() for _, p in self.params)


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


def layer_groups(model: torch.nn.Module) -> list[LayerGroup]:
    """embeddings, layer.0 .. layer.N-1, head — in that order, every parameter in one group."""
    found = _find_blocks(model)
    prefix = f"{found[0]}." if found else None
    emb, head = LayerGroup("embeddings"), LayerGroup("head")
    blocks = [LayerGroup(f"layer.{i}") for i in range(len(found[1]))] if found else []
    seen_block = False
    for qname, p in model.named_parameters():
        if prefix and qname.startswith(prefix):
            idx = int(qname[len(prefix):].split(".", 1)[0])
            blocks[idx].params.append((qname, p))
            seen_block = True
        elif seen_block or not found:
            head.params.append((qname, p))
        else:
            emb.params.append((qname, p))
    return [g for g in [emb, *blocks, head] if g.params]


def group_names(groups: list[LayerGroup]) -> list[str]:
    return [g.name for g in groups]


def set_frozen(groups: list[LayerGroup], names, frozen: bool) -> list:
    """Flip requires_grad for the named groups; return the parameters whose state changed."""
    by_name = {g.name: g for g in groups}
    changed = []
    for n in names:
        for _, p in by_name[n].params:
            if p.requires_grad == frozen:
                p.requires_grad_(not frozen)
                if frozen:
                    p.grad = None
                changed.append(p)
    return changed


def frozen_names(groups: list[LayerGroup]) -> list[str]:
    return [g.name for g in groups if not any(p.requires_grad for _, p in g.params)]


def describe(groups: list[LayerGroup]) -> list[dict]:
    """[{"name", "params", "frozen"}], the form written to RUN_DIR/layers.json."""
    return [{"name": g.name, "params": g.numel, "frozen": not any(p.requires_grad for _, p in g.params)}
            for g in groups]
