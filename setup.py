"""Build script for the one native extension; everything else is configured in pyproject.toml.

``engine.data.readers._kernels`` (a fused column-moments kernel for loading betas) is optional: where no C compiler
is available the install still succeeds and NeuroLens uses its numpy/torch path (see engine/data/readers/kernels.py).
"""

import sys

from setuptools import Extension, setup

flags = [] if sys.platform == "win32" else ["-O3", "-fno-math-errno"]
setup(
    ext_modules=[
        Extension("engine.data.readers._kernels", ["engine/data/readers/_kernels.c"], extra_compile_args=flags,
                  optional=True),
    ]
)
