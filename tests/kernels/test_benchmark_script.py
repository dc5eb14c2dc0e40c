"""benchmarks/kernels.py end to end on the CPU (--dry-run: tiny sizes, Triton interpreter),
so the GPU session's one call does not fail on a bug in the script's own logic."""

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_dry_run_writes_csv_and_tables(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels.py"), "--dry-run", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "kernels.csv")))
    benches = {row["bench"] for row in rows}
    assert benches == {"copy", "sweep", "adamw", "dropout"}, benches
    providers = {row["provider"] for row in rows if row["bench"] == "adamw"}
    assert providers == {"ours", "fused", "foreach", "forloop"}, providers
    modes = {row["mode"] for row in rows if row["bench"] == "dropout"}
    assert modes == {"fwd", "bwd", "fwd+bwd"}
    assert not [row for row in rows if row.get("error")], "a provider failed"
    assert "AdamW step" in r.stdout and "dropout (GB/s" in r.stdout and "targets:" in r.stdout
    assert (tmp_path / "kernels.md").read_text().startswith("# Kernel benchmark")


def test_benchmark_refuses_cpu_without_dry_run():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernels.py")], capture_output=True, text=True,
                       timeout=120)
    if r.returncode == 0:
        pytest.skip("a GPU is present")
    assert r.returncode == 2 and "needs a CUDA GPU" in r.stderr
