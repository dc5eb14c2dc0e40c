"""Compile the Triton kernels for sm_90 (H100) without a GPU and report what the
compiler did: vector widths of the global loads/stores, local memory, sqrt/div modes.

Run by test_compile.py in a subprocess with TRITON_INTERPRET=0 (the kernels must be real
JIT functions, not interpreted ones). Prints one JSON object.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import tuneterm_kernels.adamw as A
import tuneterm_kernels.dropout as D

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
TARGET = GPUTarget("cuda", 90, 32)
ALIGNED = [["tt.divisibility", 16]]


def compile_one(fn, signature, constexprs, aligned, num_warps):
    """``aligned``: the arguments Triton's launcher would mark divisible by 16 (pointers
    from torch's allocator; integer arguments when their value is a multiple of 16)."""
    names = list(signature)
    consts = {(names.index(k),): v for k, v in constexprs.items()}
    attrs = {(names.index(a),): ALIGNED for a in aligned}
    src = ASTSource(fn=fn, signature=signature, constexprs=consts, attrs=attrs)
    k = triton.compile(src, target=TARGET, options={"num_warps": num_warps})
    ptx = k.asm["ptx"]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as fh:
            fh.write(k.asm["cubin"])
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", path], capture_output=True, text=True).stdout
        res = subprocess.run([os.path.join(BIN, "cuobjdump"), "-res-usage", path],
                             capture_output=True, text=True).stdout
    usage = dict((m.group(1), int(m.group(2))) for m in re.finditer(r"(REG|STACK|LOCAL|SHARED):(\d+)", res))
    return {
        "usage": usage,
        "ldg": sorted(set(re.findall(r"LDG\.E[\.\w]*", sass))),
        "stg": sorted(set(re.findall(r"STG\.E[\.\w]*", sass))),
        "local": bool(re.search(r"\b(LDL|STL)\b", sass)),
        "sqrt": sorted(set(re.findall(r"sqrt\.[\w\.]+", ptx))),
        "div": sorted(set(re.findall(r"div\.[\w\.]+", ptx))),
        "imad_hi": len(re.findall(r"IMAD\.HI", sass)),
    }


def main():
    out = {}
    for kind, pt in [(1, "*i16"), (0, "*fp32"), (2, "*fp16")]:
        sig = {"x_ptr": pt, "out_ptr": pt, "n_elements": "i32", "seed_lo": "i32", "seed_hi": "i32",
               "off_lo": "i32", "off_hi": "i32", "threshold": "i32", "scale": "fp32",
               "KIND": "constexpr", "BLOCK_SIZE": "constexpr"}
        consts = {"KIND": kind, "BLOCK_SIZE": 4096}
        # the usual case, numel % 16 == 0 (Triton specialises on it) ...
        out[f"dropout_kind{kind}"] = compile_one(D._seeded_dropout_kernel, sig, consts,
                                                 ["x_ptr", "out_ptr", "n_elements"], 8)
        # ... and an odd numel: the tail mask is then unknown to the compiler
        out[f"dropout_kind{kind}_odd"] = compile_one(D._seeded_dropout_kernel, sig, consts, ["x_ptr", "out_ptr"], 8)
    for gk, pt in [(0, "*fp32"), (1, "*i16")]:
        sig = {"master_ptr": "*fp32", "model_ptr": pt, "grad_ptr": pt, "m_ptr": "*fp32", "v_ptr": "*fp32",
               "tiles_ptr": "*i64", "runs_ptr": "*fp32", "beta2": "fp32", "w1": "fp32", "w2": "fp32",
               "eps": "fp32", "grad_scale": "fp32", "GRAD_KIND": "constexpr", "MODEL_KIND": "constexpr",
               "SMALL_W1": "constexpr", "BLOCK_SIZE": "constexpr"}
        out[f"adamw_kind{gk}"] = compile_one(A._flat_adamw_kernel, sig, {"GRAD_KIND": gk, "MODEL_KIND": gk,
                                                                         "SMALL_W1": True, "BLOCK_SIZE": 2048},
                                           list(sig)[:7], 8)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
