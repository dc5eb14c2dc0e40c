"""tuneterm.engine.accel: the kernel choice, precision, compile, determinism and the fused
causal-LM loss (CPU; compile through backend aot_eager, inductor needs a C++ toolchain
this CI does not promise)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from tuneterm.engine import accel
from tuneterm.errors import UserError


def _session(dtype="float32", **runtime):
    rt = {"kernels": "auto", "precision": "auto", "compile": False, "deterministic": False, **runtime}
    return SimpleNamespace(model=SimpleNamespace(dtype=dtype), runtime=SimpleNamespace(**rt))


def test_setup_resolves_kernels_and_precision(monkeypatch):
    acc = accel.setup(_session(), "cpu")
    assert (acc.impl, acc.param_dtype, acc.autocast_dtype) == ("torch", torch.float32, None)
    acc = accel.setup(_session(precision="bf16"), "cpu")
    assert acc.autocast_dtype == torch.bfloat16
    with accel.autocast(acc):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    with accel.autocast(accel.setup(_session(), "cpu")):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    pure = accel.setup(_session(dtype="bfloat16", precision="bf16"), "cpu")  # already bf16: no autocast
    assert (pure.param_dtype, pure.autocast_dtype) == (torch.bfloat16, None)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(UserError, match="--kernels triton: .*CUDA"):
        accel.setup(_session(), "cpu", "triton")
    with pytest.raises(UserError, match="runtime.precision"):
        accel.setup(_session(precision="fp8"), "cpu")


def test_deterministic_sets_the_global_switches_only_when_asked():
    code = """
import os, torch
from types import SimpleNamespace as N
from tuneterm.engine import accel
s = lambda d: N(model=N(dtype="float32"), runtime=N(kernels="torch", precision="auto", compile=False, deterministic=d))
accel.setup(s(False), "cpu")
assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
accel.setup(s(True), "cpu")
assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and not torch.backends.cudnn.benchmark
print("ok")
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    from tuneterm.engine import dropout as drop

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=24, max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(cfg)
    ctx = drop.DropoutContext(seed=7)
    drop.install(model, ctx, 0.2, "torch")
    return model.train(), ctx


def test_compiled_model_matches_eager_and_a_new_step_compiles_nothing():
    eager, ctx_e = _tiny_bert()
    compiled, ctx_c = _tiny_bert()
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        from torch._dynamo.backends.debugging import aot_eager
        return aot_eager(gm, example_inputs)

    accel.maybe_compile(compiled, accel.Accel("torch", torch.device("cpu"), torch.float32, None, True, False),
                        backend=counting)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints keep their keys
    ids = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(1))
    n_after_first = None
    for step in range(3):
        outs = []
        for model, ctx in ((eager, ctx_e), (compiled, ctx_c)):
            ctx.at(step, 0)
            model.zero_grad(set_to_none=True)
            logits = model(input_ids=ids).logits
            logits.float().pow(2).sum().backward()
            outs.append((logits.detach(), model.bert.embeddings.word_embeddings.weight.grad.clone()))
        torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-6)  # the same dropout masks
        torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-5, atol=1e-6)
        if step == 0:
            n_after_first = len(graphs)
    assert n_after_first and len(graphs) == n_after_first  # steps 1 and 2: new seeds, no recompile


def test_a_causal_lm_trained_through_its_parts_runs_compiled():
    """The causal-LM and preference tasks call the decoder stack and the head, not the model's
    forward: compile = true compiles the stack (the backbone), so those calls run compiled
    (before, a compiled top-level forward never ran and the flag did nothing), with the same
    dropout masks as eager, and a new step compiles nothing."""
    from tuneterm.engine import dropout as drop

    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        from torch._dynamo.backends.debugging import aot_eager
        return aot_eager(gm, example_inputs)

    models = []
    for compiled in (False, True):
        m = _lm(tied=True).train()
        ctx = drop.DropoutContext(seed=7)
        drop.install(m, ctx, 0.2, "torch")
        if compiled:
            keys = list(m.state_dict())
            accel.maybe_compile(m, accel.Accel("torch", torch.device("cpu"), torch.float32, None, True, False),
                                backend=counting)
            assert list(m.state_dict()) == keys
        models.append((m, ctx))
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    seen = None
    for step in range(3):
        outs = []
        for m, ctx in models:
            ctx.at(step, 0)
            m.zero_grad(set_to_none=True)
            hidden = m.base_model(input_ids=ids, use_cache=False).last_hidden_state  # as the task calls it
            m.get_output_embeddings()(hidden).float().pow(2).mean().backward()
            outs.append((hidden.detach(), m.model.layers[0].mlp.up_proj.weight.grad.clone()))
        torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-5, atol=1e-6)
        if step == 0:
            seen = len(graphs)
    assert seen and len(graphs) == seen


def _lm(tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=tied)
    return LlamaForCausalLM(cfg)


@pytest.mark.parametrize("tied", [False, True])
def test_causal_lm_loss_matches_the_models_own_loss(tied):
    """The loss the trainer trains a causal LM on (the task's fused linear cross-entropy, on
    tuneterm's pre-shifted labels) is the model's own, and so are its gradients."""
    from tuneterm.engine.tasks.causal_lm import CausalLMTask

    ids = torch.randint(0, 97, (2, 11), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    hf_labels = ids.masked_fill(mask == 0, -100)
    shifted = torch.cat([hf_labels[:, 1:], torch.full((2, 1), -100)], dim=1)  # labels[t]: the target of t
    task = CausalLMTask()
    task.impl = "torch"
    grads = []
    for fused in (False, True):
        model = _lm(tied)
        if fused:
            loss = task.loss(model, {"input_ids": ids, "attention_mask": mask, "labels": shifted})
        else:
            loss = model(input_ids=ids, attention_mask=mask, labels=hf_labels).loss
        loss.backward()
        grads.append((loss.detach(), model.model.embed_tokens.weight.grad.clone(),
                      model.lm_head.weight.grad.clone()))
    for ours, ref in zip(grads[1], grads[0]):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)


def test_an_fsdp_session_resolves_auto_to_the_torch_kernels(monkeypatch):
    """On CUDA, auto is triton, whose flat AdamW cannot hold FSDP's DTensor shards: an FSDP
    session's auto is torch (on any process count), an explicit triton is left to the strategy
    to refuse, and --kernels still wins."""
    import tuneterm_kernels.runtime as rt

    monkeypatch.setattr(rt, "triton_available", lambda: True)
    cuda = torch.device("cuda")
    s = _session()
    for strategy, want in (("ddp", "triton"), ("fsdp", "torch")):
        s.distributed = SimpleNamespace(strategy=strategy)
        assert accel.resolve(accel.kernels_request(s), cuda) == want
    s.runtime.kernels = "triton"
    assert accel.kernels_request(s) == "triton"
    assert accel.kernels_request(s, "torch") == "torch"
