"""Builds rnnscan's C++ kernels at install, once per instruction set
(`rnnscan/kernels/build.py`); everything else is in pyproject.toml.

Each variant is declared as an extension so that setuptools puts the library
where the package is installed from: the wheel for `pip install .`, the source
tree for `pip install -e .` and `python setup.py build_ext --inplace`. Without a
working C++ compiler the install still succeeds, as pure JAX, with a warning.
"""

import importlib.util
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
_spec = importlib.util.spec_from_file_location("rnnscan_build", HERE / "rnnscan/kernels/build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)  # without importing rnnscan (its dependencies may be absent)


class Variant(Extension):
    """One variant's library: build.py compiles it (named so that setuptools
    copies it where the package is installed from); loaded with ctypes."""

    def __init__(self, source: str, variant: str):
        name = build.library_name(source, variant)[: -len(".so")]
        super().__init__(f"rnnscan.kernels.{name}", sources=[f"rnnscan/kernels/{source}.cc"])


class BuildKernels(build_ext):
    def get_ext_filename(self, fullname):  # build.library_name's, no Python ABI tag
        return str(Path(*fullname.split("."))) + ".so"

    def build_extensions(self):
        build.build_all(Path(self.get_ext_fullpath(self.extensions[0].name)).parent,
                        HERE / "rnnscan" / "kernels")


setup(
    ext_modules=[Variant(source, variant) for source in build.SOURCES
                 for variant in build.VARIANTS],
    cmdclass={"build_ext": BuildKernels},
)
