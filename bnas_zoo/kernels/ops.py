"""The op schemas, their fake (meta) implementations for torch.export, and the loading of the compiled
kernels with the reference fallback."""
from __future__ import annotations

import contextlib
import os
import platform
import sys
import threading
import warnings
from pathlib import Path
from typing import Iterator, List, Optional

import torch

from .reference import binary_conv2d_reference

__all__ = ['backend', 'build_error', 'cpu_isa', 'cpu_isa_levels', 'ensure_loaded', 'use_isa']

CSRC = Path(__file__).resolve().parent / 'csrc'
#: the portable sources, built everywhere; and the x86-64 instruction-set files, built only there
SOURCES = ['ops.cpp', 'program.cpp', 'train_ops.cpp', 'exact_bn_sign.cpp', 'max_pool.cpp', 'bconv_generic.cpp']
X86_SOURCES = ['bconv_avx2.cpp', 'bconv_avx512.cpp', 'bconv_avx512vp.cpp']
#: set to 1 to make a failed build an error instead of a fallback to the reference (CI sets it)
REQUIRE_ENV = 'BNAS_ZOO_REQUIRE_KERNELS'
#: set to 1 to skip the build and run the reference implementation
DISABLE_ENV = 'BNAS_ZOO_DISABLE_KERNELS'
#: set to 1 to build the portable kernels alone (as on a CPU that is not x86-64), e.g. to test them
PORTABLE_ENV = 'BNAS_ZOO_PORTABLE_KERNELS'
#: 0 or 1: build without / with OpenMP (default: with, except on macOS); without, the kernels use one thread
OPENMP_ENV = 'BNAS_ZOO_OPENMP'

_lib = torch.library.Library('bnas_zoo', 'FRAGMENT')
_lib.define(
    'binary_conv2d(Tensor x, Tensor scale, Tensor shift, Tensor wbits, Tensor wmask, Tensor wcounts, Tensor alpha, '
    'Tensor int_bias, int out_channels, int kernel_size, int stride, int padding, int dilation, bool relu, '
    'Tensor? residual=None) -> Tensor')


_lib.define('run_program(Tensor x, Tensor[] params, Tensor code, int out_channels, int out_stride) -> Tensor')


@torch.library.register_fake('bnas_zoo::run_program', lib=_lib)
def _run_program_fake(x, params, code, out_channels, out_stride):
    n, _, h, w = x.shape
    return x.new_empty((n, out_channels, -(-h // out_stride), -(-w // out_stride))).contiguous(
        memory_format=torch.channels_last)


def _run_program_reference(x, params, code, out_channels, out_stride):
    from ..program import run_program_reference
    return run_program_reference(x, params, code.tolist())


@torch.library.register_fake('bnas_zoo::binary_conv2d', lib=_lib)
def _binary_conv2d_fake(x, scale, shift, wbits, wmask, wcounts, alpha, int_bias, out_channels, kernel_size, stride, padding,
                        dilation, relu, residual=None):
    n, _, h, w = x.shape
    oh = (h + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    return x.new_empty((n, out_channels, oh, ow)).contiguous(memory_format=torch.channels_last)


_state = {'backend': None, 'error': None}
_lock = threading.Lock()


def _is_x86_64() -> bool:
    return platform.machine().lower() in ('x86_64', 'amd64', 'x64')


def _openmp() -> bool:
    """Whether to build with OpenMP: yes, except on macOS, whose clang has no OpenMP without libomp
    (BNAS_ZOO_OPENMP=0 or 1 decides instead)."""
    env = os.environ.get(OPENMP_ENV)
    return env == '1' if env in ('0', '1') else sys.platform != 'darwin'


def _build() -> None:
    import logging
    # a CPU-only machine with a CUDA build of torch: cpp_extension logs a CUDA_HOME notice that does not apply
    logging.getLogger('torch.utils.cpp_extension').setLevel(logging.ERROR)
    from torch.utils.cpp_extension import load
    portable = os.environ.get(PORTABLE_ENV) == '1' or not _is_x86_64()
    flags = ['-O3', '-ffp-contract=off', '-fno-math-errno'] + (['-DBNAS_PORTABLE_ONLY'] if portable else [])
    # -fopenmp: at::parallel_for is inline OpenMP code (torch's intra-op pool); the extension links to the
    # libgomp.so.1 that torch has already loaded, so torch.set_num_threads applies to the kernels. A compiler
    # without OpenMP builds them single-threaded.
    omp = ['-fopenmp'] if _openmp() else []
    load(
        name='bnas_zoo_kernels_portable' if portable else 'bnas_zoo_kernels',
        sources=[str(CSRC / s) for s in SOURCES + ([] if portable else X86_SOURCES)],
        extra_cflags=flags + omp,
        extra_ldflags=omp,
        extra_include_paths=[str(CSRC)],
        is_python_module=False,
        verbose=os.environ.get('BNAS_ZOO_VERBOSE_BUILD') == '1',
    )


def ensure_loaded() -> str:
    """Build (first use, then cached) and load the compiled kernels; fall back to the reference with one
    warning. Returns the backend: ``'compiled'`` or ``'reference'``."""
    if _state['backend'] is not None:
        return _state['backend']
    with _lock:
        if _state['backend'] is not None:
            return _state['backend']
        error: Optional[str] = None
        if os.environ.get(DISABLE_ENV) == '1':
            error = f'disabled by {DISABLE_ENV}=1'
        else:
            try:
                _build()
            except Exception as e:  # a missing compiler, a failed build: the reference still gives the outputs
                error = f'{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}'
                if os.environ.get(REQUIRE_ENV) == '1':
                    raise RuntimeError(f'bnas_zoo: the compiled binary kernels could not be built ({error}) '
                                       f'and {REQUIRE_ENV}=1 forbids the fallback') from e
        if error is None:
            _state['backend'] = 'compiled'
        else:
            _lib.impl('binary_conv2d', binary_conv2d_reference, 'CPU')
            _lib.impl('run_program', _run_program_reference, 'CPU')
            _state['backend'], _state['error'] = 'reference', error
            warnings.warn(f'bnas_zoo: compiled binary kernels unavailable ({error}); deployed networks run the '
                          f'pure-PyTorch reference instead (same outputs, much slower) and training computes the '
                          f'float simulation', RuntimeWarning, stacklevel=2)
        return _state['backend']


def loaded() -> bool:
    """Whether the compiled kernels are loaded already (without starting their build)."""
    return _state['backend'] == 'compiled'


def backend() -> str:
    """``'compiled'`` or ``'reference'`` (loading the kernels if needed)."""
    return ensure_loaded()


def build_error() -> Optional[str]:
    """Why the compiled kernels are not used, or None."""
    ensure_loaded()
    return _state['error']


def cpu_isa_levels() -> List[str]:
    """The instruction-set levels this CPU supports, best first (``['reference']`` without the kernels)."""
    if ensure_loaded() != 'compiled':
        return ['reference']
    return list(torch.ops.bnas_zoo_kernels.cpu_isa_levels())


def cpu_isa() -> str:
    """The level the kernels run now."""
    if ensure_loaded() != 'compiled':
        return 'reference'
    return torch.ops.bnas_zoo_kernels.cpu_isa()


@contextlib.contextmanager
def use_isa(level: str) -> Iterator[None]:
    """Run the kernels at ``level`` (one of :func:`cpu_isa_levels`) inside the block, e.g. to compare levels."""
    if ensure_loaded() != 'compiled':
        raise RuntimeError(f'bnas_zoo: compiled kernels unavailable ({build_error()})')
    previous = torch.ops.bnas_zoo_kernels.set_cpu_isa(level)
    try:
        yield
    finally:
        torch.ops.bnas_zoo_kernels.set_cpu_isa(previous)
