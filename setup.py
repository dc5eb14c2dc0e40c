"""Build-only shim: all metadata lives in pyproject.toml; this adds the optional C
extension ``tuneterm_kernels._philox`` (the dropout mask's Philox on the CPU).

optional=True: without a C compiler the install still succeeds and the PyTorch generator
of tuneterm_kernels.dropout is used instead (tuneterm_kernels.philox_cpu.available()).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tuneterm_kernels._philox",
            ["kernels/tuneterm_kernels/_philox.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
