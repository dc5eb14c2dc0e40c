"""resolve_impl: auto/triton/torch, and the import guard."""

import subprocess
import sys

import pytest

from tuneterm_kernels import resolve_impl


def test_resolve_impl(monkeypatch):
    assert resolve_impl("torch", "cpu") == "torch"
    assert resolve_impl("auto", "cpu") == "torch"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_impl("triton", "cpu") == "triton"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="needs a CUDA device") as e:
        resolve_impl("triton", "cpu")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError):
        resolve_impl("cuda", "cpu")


def test_torch_paths_work_without_triton():
    """With triton unimportable, the package and the torch paths still work."""
    code = """
import sys
sys.modules['triton'] = None  # makes `import triton` raise ImportError
import torch
from tuneterm_kernels import resolve_impl
from tuneterm_kernels import dropout, adamw
assert resolve_impl('auto', 'cpu') == 'torch'
x = torch.randn(100)
y = dropout.dropout(x, 0.5, 1, impl='torch')
p = torch.nn.Parameter(torch.randn(10))
opt = adamw.FlatAdamW([('p', p, True)], impl='torch')
p.grad.normal_()
opt.step(lr=1e-3, weight_decay=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
print('ok')
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
