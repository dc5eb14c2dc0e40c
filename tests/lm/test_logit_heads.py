"""Models whose forward does more to the logits than the LM head's matmul — Gemma-2's
final soft cap (cap * tanh(logits / cap)), Cohere's logit_scale, Granite's logits_scaling —
train on the loss the model itself defines: the causal-LM task's fused training loss and
its evaluation equal ``model(input_ids, labels=...).loss`` over the same positions (fp32),
and the fused gradients equal the model's own."""

from __future__ import annotations

import pytest
import torch

from tuneterm.engine import lm_data as LM
from tuneterm.engine.tasks.base import TaskData
from tuneterm.engine.tasks.causal_lm import CausalLMTask

V = 97
SHAPE = dict(vocab_size=V, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
             initializer_range=0.5)  # logits of a few units: the cap and the scales change the loss a lot


def _gemma2():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    return Gemma2ForCausalLM(Gemma2Config(**SHAPE, head_dim=8, final_logit_softcapping=2.0))  # tied head


def _cohere():
    from transformers import CohereConfig, CohereForCausalLM

    return CohereForCausalLM(CohereConfig(**SHAPE, logit_scale=0.25))


def _granite():
    from transformers import GraniteConfig, GraniteForCausalLM

    return GraniteForCausalLM(GraniteConfig(**SHAPE, logits_scaling=4.0))


MODELS = {"gemma2-softcap": _gemma2, "cohere-logit-scale": _cohere, "granite-logits-scaling": _granite}


def _model(name: str):
    torch.manual_seed(7)
    return MODELS[name]().eval()  # no dropout: both losses see the same activations


def _examples() -> list:
    """Prompt-completion-like examples of several lengths: the last tokens of each trained."""
    g = torch.Generator().manual_seed(3)
    out = []
    for n, prompt in ((11, 4), (7, 2), (14, 9), (5, 1)):
        ids = torch.randint(3, V, (n,), generator=g).tolist()
        labels = [ids[t + 1] if t + 1 >= prompt else LM.IGNORE for t in range(n - 1)] + [LM.IGNORE]
        out.append(LM.Example(ids, labels, ids[:prompt], "", ""))
    return out


def _own_loss(model, batch) -> torch.Tensor:
    """The model's loss: its labels are the input positions (it shifts them itself)."""
    labels = batch["labels"]
    hf = torch.cat([torch.full_like(labels[:, :1], LM.IGNORE), labels[:, :-1]], dim=1)
    assert (labels[:, -1] == LM.IGNORE).all()
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=hf).loss


@pytest.mark.parametrize("name", list(MODELS))
def test_the_training_loss_is_the_models_own(name, monkeypatch):
    from tuneterm_kernels import linear_ce

    model = _model(name)
    task = CausalLMTask()
    task.impl = "torch"
    data = LM.Examples(_examples())
    batch = task.collate(data, range(len(data)), "cpu")
    params = [p for p in model.parameters() if p.requires_grad]

    calls = []
    real = linear_ce.linear_cross_entropy
    monkeypatch.setattr(linear_ce, "linear_cross_entropy", lambda *a, **k: calls.append(k) or real(*a, **k))
    ours = task.loss(model, batch)
    assert calls  # the fused path, not a fallback to the whole logits
    g_ours = torch.autograd.grad(ours, params)
    own = _own_loss(model, batch)
    g_own = torch.autograd.grad(own, params)
    with torch.no_grad():
        bare = torch.nn.functional.cross_entropy(*_bare_logits(task, model, batch))
    assert abs(float(bare) - float(own.detach())) > 1e-2  # the head's bare logits: another loss
    torch.testing.assert_close(ours, own, rtol=1e-5, atol=1e-6)
    for a, b in zip(g_ours, g_own):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _bare_logits(task, model, batch):
    """The LM head's matmul alone at the trained positions (what tuneterm used to train on)."""
    hidden, head = task._hidden_and_head(model, batch)
    sel = batch["labels"] != LM.IGNORE
    return head(hidden[sel]).float(), batch["labels"][sel]


@pytest.mark.parametrize("name", list(MODELS))
def test_the_evaluation_is_the_models_own(name):
    model = _model(name)
    task = CausalLMTask()
    val = LM.Examples(_examples())
    res = task.evaluate(model, TaskData(None, val, {}), "cpu", batch_size=len(val))  # one batch
    with torch.no_grad():
        batch = task.collate(val, range(len(val)), "cpu")
        own = _own_loss(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    sel = batch["labels"] != LM.IGNORE
    accuracy = float((logits[sel].argmax(-1) == batch["labels"][sel]).float().mean())
    assert res["val_loss"] == pytest.approx(float(own), rel=1e-5)
    assert res["val_token_accuracy"] == pytest.approx(accuracy)


def test_a_gemma2_folder_trains_on_its_own_loss_through_the_trainer(workspace, tok):
    """Through the Trainer (tuneterm's attention and dropout installed): Gemma-2 also caps its
    attention scores (attn_logit_softcapping), which SDPA cannot do — evaluation and
    training go through the eager formula with the cap, and the loss is the model's own."""
    import json

    from transformers import Gemma2Config, Gemma2ForCausalLM

    from tuneterm_kernels.dropout import SeededDropout

    from tuneterm.engine.runs import create_run
    from tuneterm.engine.trainer import Trainer
    from tuneterm.session.io import load_session

    folder = workspace / "models" / "g2"
    cfg = Gemma2Config(**{**SHAPE, "vocab_size": len(tok), "pad_token_id": tok.pad_token_id}, head_dim=8,
                       final_logit_softcapping=2.0, attn_logit_softcapping=0.5)
    torch.manual_seed(7)
    Gemma2ForCausalLM(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    words = "red green blue cat dog sun moon tree".split()
    (workspace / "pc.jsonl").write_text("".join(json.dumps({"prompt": f"say {a} {b}", "completion": f" {b} {a}"}) + "\n"
                                                for a in words for b in words[:3]))
    path = workspace / "sessions" / "g2.toml"
    path.write_text('[session]\nname = "g2"\nseed = 4\n[model]\nsource = "models/g2"\ntask = "causal-lm"\n'
                    '[data]\nsource = "pc.jsonl"\nmax_length = 24\n[hyperparameters]\nbatch_size = 4\n'
                    'max_steps = 2\ndropout = 0.1\n[runtime]\ndevice = "cpu"\nkernels = "torch"\nthreads = 1\n')
    s = load_session(path, workspace)
    t = Trainer(s, create_run(workspace, s), workspace, sinks=[])
    t.setup()
    model, task = t.model, t.task
    batch = task.collate(t.data.train, list(range(4)), t.device)
    with torch.no_grad():
        own = _own_loss(Gemma2ForCausalLM.from_pretrained(str(folder)).eval(), batch)  # HF's eager attention
        assert abs(float(own) - float(_own_loss(_without_caps(folder), batch))) > 1e-2  # both caps matter here
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(task.loss(model, batch), own, rtol=1e-5, atol=1e-6)
        assert task.evaluate(model, TaskData(None, LM.Examples(t.data.train.examples[:4]), {}), t.device, 4)[
            "val_loss"] == pytest.approx(float(own), rel=1e-5)
    model.train()  # the attention-dropout path, its masks made the identity: the same formula
    for m in model.modules():
        if isinstance(m, SeededDropout):
            m.forward = lambda x: x
    with torch.no_grad():
        torch.testing.assert_close(task.loss(model, batch), own, rtol=1e-5, atol=1e-6)
    t.cleanup()


def _without_caps(folder):
    from transformers import Gemma2ForCausalLM

    m = Gemma2ForCausalLM.from_pretrained(str(folder), attn_logit_softcapping=None, final_logit_softcapping=None)
    return m.eval()
