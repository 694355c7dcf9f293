"""Build the compiled kernels; everything else about the package is in setup.cfg."""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError, LinkError

OPENMP = ["-fopenmp"]


class BuildWithOpenMP(build_ext):
    """Compile with OpenMP (the runtime Numba's "omp" threading layer uses, so both
    share one thread pool); a compiler without it gets single-threaded kernels."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except (CompileError, LinkError):
            self.warn(f"{ext.name}: building without OpenMP; the kernels will run on one thread")
            ext.extra_compile_args = [arg for arg in ext.extra_compile_args if arg not in OPENMP]
            ext.extra_link_args = [arg for arg in ext.extra_link_args if arg not in OPENMP]
            super().build_extension(ext)


setup(
    ext_modules=[
        Extension(
            "deeplearning_tutorial.ops.kernels._kernels",
            sources=["deeplearning_tutorial/ops/kernels/csrc/kernels.c"],
            depends=["deeplearning_tutorial/ops/kernels/csrc/kernels_impl.h"],
            extra_compile_args=["-O3", "-fno-math-errno", "-fvisibility=hidden", *OPENMP],
            extra_link_args=OPENMP,
        )
    ],
    cmdclass={"build_ext": BuildWithOpenMP},
)
