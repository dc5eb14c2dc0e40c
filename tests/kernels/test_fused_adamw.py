"""FusedAdamW, the drop-in torch.optim.Optimizer: against torch.optim.AdamW(foreach=False)
with param groups, an lr scheduler and a freeze through requires_grad; torch's state_dict
round trip; a few steps inside an HF Trainer.

Tolerance against torch: rtol 1.3e-6, atol 1e-5 over the steps (the same update, op for
op; the flat torch path can differ from torch's per-tensor one only by summation-free
rounding of fused scalars, see test_adamw.py). A resume is compared bit for bit.
"""

import copy
import io

import pytest
import torch

from tuneterm_kernels import FusedAdamW


def _model(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(7, 13), torch.nn.LayerNorm(13), torch.nn.Linear(13, 5)).to(dtype)


def _groups(model):
    (l1, ln, l2) = model
    return [{"params": [l1.weight, l2.weight], "weight_decay": 0.1},
            {"params": [l1.bias, ln.weight, ln.bias, l2.bias], "weight_decay": 0.0, "lr": 3e-3}]


def _train(model, opt, sched, steps, freeze_at=(3, 6), batch_seed=100):
    frozen = model[0].weight
    for step in range(steps):
        if step == freeze_at[0]:
            frozen.requires_grad_(False)
        if step == freeze_at[1]:
            frozen.requires_grad_(True)
        g = torch.Generator().manual_seed(batch_seed + step)
        x = torch.randn(8, 7, generator=g)
        opt.zero_grad(set_to_none=True)
        model(x.to(next(model.parameters()).dtype)).float().pow(2).mean().backward()
        opt.step()
        sched.step()


def _pair(steps=9, **kw):
    ref_model, our_model = _model(), _model()
    ref = torch.optim.AdamW(_groups(ref_model), lr=1e-2, foreach=False)
    ours = FusedAdamW(_groups(our_model), lr=1e-2, impl="torch")
    lam = lambda s: 1.0 / (1 + s)  # noqa: E731
    _train(ref_model, ref, torch.optim.lr_scheduler.LambdaLR(ref, lam), steps, **kw)
    _train(our_model, ours, torch.optim.lr_scheduler.LambdaLR(ours, lam), steps, **kw)
    return ref_model, our_model, ref, ours


def test_matches_torch_adamw_with_groups_scheduler_and_a_freeze():
    ref_model, our_model, ref, ours = _pair()
    for (name, a), b in zip(ref_model.named_parameters(), our_model.parameters()):
        torch.testing.assert_close(b, a, rtol=1.3e-6, atol=1e-5, msg=name)
    # the frozen weight skipped steps 3-5 and kept its state, as in torch
    frozen_ref = ref.state[ref_model[0].weight]
    sd = ours.state_dict()
    assert float(sd["state"][0]["step"]) == float(frozen_ref["step"]) == 6
    torch.testing.assert_close(sd["state"][0]["exp_avg"], frozen_ref["exp_avg"], rtol=1e-5, atol=1e-7)
    assert ours.param_groups[1]["lr"] == pytest.approx(3e-3 / 10)  # the scheduler's value


def test_a_parameter_without_grad_is_skipped_like_torch():
    ref_model, our_model, _, _ = _pair(steps=4, freeze_at=(0, 10**6))  # frozen from the start
    assert torch.equal(our_model[0].weight, _model()[0].weight)  # never touched: no decay either
    torch.testing.assert_close(our_model[2].weight, ref_model[2].weight, rtol=1.3e-6, atol=1e-5)


def test_state_dict_resume_is_bit_identical():
    m1 = _model()
    o1 = FusedAdamW(_groups(m1), lr=1e-2)
    s1 = torch.optim.lr_scheduler.LambdaLR(o1, lambda s: 0.9 ** s)
    _train(m1, o1, s1, 5, freeze_at=(2, 4))
    buf = io.BytesIO()
    torch.save({"model": m1.state_dict(), "opt": o1.state_dict(), "sched": s1.state_dict()}, buf)
    m_cont = copy.deepcopy(m1)
    _train(m1, o1, s1, 3, freeze_at=(-1, -1), batch_seed=200)

    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    m2 = _model(seed=5)  # different initial weights: all comes from the checkpoint
    m2.load_state_dict(saved["model"])
    assert all(torch.equal(a, b) for a, b in zip(m2.parameters(), m_cont.parameters()))
    o2 = FusedAdamW(_groups(m2), lr=1.0)
    s2 = torch.optim.lr_scheduler.LambdaLR(o2, lambda s: 0.9 ** s)
    o2.load_state_dict(saved["opt"])
    s2.load_state_dict(saved["sched"])
    _train(m2, o2, s2, 3, freeze_at=(-1, -1), batch_seed=200)
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)


def test_bf16_parameters_keep_an_fp32_master_in_the_state():
    m = _model(dtype=torch.bfloat16)
    opt = FusedAdamW(m.parameters(), lr=1e-2)
    _train(m, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), 2, freeze_at=(-1, -1))
    st = opt.state_dict()["state"][0]
    assert st["master"].dtype == torch.float32
    assert torch.equal(st["master"].to(torch.bfloat16), m[0].weight.detach())


def test_refuses_what_it_does_not_do():
    with pytest.raises(ValueError, match="amsgrad"):
        FusedAdamW(_model().parameters(), amsgrad=True)
    with pytest.raises(ValueError, match="invalid"):
        FusedAdamW(_model().parameters(), lr=-1.0)


def test_inside_an_hf_trainer(tmp_path):
    pytest.importorskip("transformers")
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    cfg = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=37, max_position_embeddings=64, num_labels=3)
    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(0, 99, (12,), generator=g), "labels": int(i % 3)} for i in range(16)]

    def run(make_opt):
        torch.manual_seed(0)
        model = BertForSequenceClassification(cfg)
        args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4,
                                 learning_rate=1e-3, weight_decay=0.01, logging_steps=1, report_to=[],
                                 save_strategy="no", use_cpu=True, seed=0, dataloader_num_workers=0)
        opt = make_opt(model)
        trainer = Trainer(model=model, args=args, train_dataset=rows, optimizers=(opt, None))
        trainer.train()
        losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
        return model, losses

    def groups(model):
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
        return [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]

    ours, our_losses = run(lambda m: FusedAdamW(groups(m), lr=1e-3))
    ref, ref_losses = run(lambda m: torch.optim.AdamW(groups(m), lr=1e-3, foreach=False))
    assert len(our_losses) == 4 and all(map(torch.isfinite, map(torch.tensor, our_losses)))
    assert our_losses == pytest.approx(ref_losses, rel=1e-5)
    for (name, a), b in zip(ref.named_parameters(), ours.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
