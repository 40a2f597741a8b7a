"""The optional C extension of the log cleaner; everything else is in pyproject.toml.

`optional=True`: without a compiler the install goes on and the cleaner runs its Python loops
(same results, slower)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ackly.log._clean_scan",
            ["src/ackly/log/_clean_scan.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
