"""The op schemas, their fake (meta) implementations for torch.export, and the loading of the compiled
kernels with the reference fallback."""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from pathlib import Path
from typing import Iterator, List, Optional

import torch

from .reference import binary_conv2d_reference

__all__ = ['backend', 'build_error', 'cpu_isa', 'cpu_isa_levels', 'ensure_loaded', 'use_isa']

CSRC = Path(__file__).resolve().parent / 'csrc'
SOURCES = ['ops.cpp', 'train_ops.cpp', 'bconv_generic.cpp', 'bconv_avx2.cpp', 'bconv_avx512.cpp', 'bconv_avx512vp.cpp']
#: set to 1 to make a failed build an error instead of a fallback to the reference (CI sets it)
REQUIRE_ENV = 'BNAS_ZOO_REQUIRE_KERNELS'
#: set to 1 to skip the build and run the reference implementation
DISABLE_ENV = 'BNAS_ZOO_DISABLE_KERNELS'

_lib = torch.library.Library('bnas_zoo', 'FRAGMENT')
_lib.define(
    'binary_conv2d(Tensor x, Tensor scale, Tensor shift, Tensor wbits, Tensor wmask, Tensor alpha, '
    'Tensor int_bias, int out_channels, int kernel_size, int stride, int padding, int dilation, bool relu, '
    'Tensor? residual=None) -> Tensor')


@torch.library.register_fake('bnas_zoo::binary_conv2d', lib=_lib)
def _binary_conv2d_fake(x, scale, shift, wbits, wmask, alpha, int_bias, out_channels, kernel_size, stride, padding,
                        dilation, relu, residual=None):
    n, _, h, w = x.shape
    oh = (h + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1
    return x.new_empty((n, out_channels, oh, ow)).contiguous(memory_format=torch.channels_last)


_state = {'backend': None, 'error': None}
_lock = threading.Lock()


def _build() -> None:
    import logging
    # a CPU-only machine with a CUDA build of torch: cpp_extension logs a CUDA_HOME notice that does not apply
    logging.getLogger('torch.utils.cpp_extension').setLevel(logging.ERROR)
    from torch.utils.cpp_extension import load
    load(
        name='bnas_zoo_kernels',
        sources=[str(CSRC / s) for s in SOURCES],
        # -fopenmp: at::parallel_for is inline OpenMP code (torch's intra-op pool); the extension links to the
        # libgomp.so.1 that torch has already loaded, so torch.set_num_threads applies to the kernels
        extra_cflags=['-O3', '-ffp-contract=off', '-fno-math-errno', '-fopenmp'],
        extra_ldflags=['-fopenmp'],
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
            _state['backend'], _state['error'] = 'reference', error
            warnings.warn(f'bnas_zoo: compiled binary kernels unavailable ({error}); deployed networks run the '
                          f'pure-PyTorch reference instead (same outputs, much slower) and training computes the '
                          f'float simulation', RuntimeWarning, stacklevel=2)
        return _state['backend']


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
