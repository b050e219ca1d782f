"""Deployment kernels: packed binary (XNOR-popcount) convolutions as ``torch.library`` ops.

The compiled kernels (C++ in ``csrc/``, written by hand: no library provides a packed ternary popcount
convolution for PyTorch on x86) are built on first use with torch's extension tooling and cached; the CPU's
instruction set is chosen at run time (AVX-512 with VPOPCNTDQ, AVX-512, AVX2, portable). Where they cannot be
built, a pure-PyTorch reference with the same outputs runs instead, and says so once.

- ``torch.ops.bnas_zoo.binary_conv2d``: BatchNorm -> sign -> binary conv -> alpha -> ReLU (+ residual).
- :func:`backend`: ``'compiled'`` or ``'reference'``; :func:`cpu_isa`, :func:`cpu_isa_levels`, :func:`use_isa`.
"""
from .ops import backend, build_error, cpu_isa, cpu_isa_levels, ensure_loaded, use_isa
from .reference import binary_conv2d_reference, pack_weight_words, unpack_weight_words

__all__ = ['backend', 'build_error', 'cpu_isa', 'cpu_isa_levels', 'ensure_loaded', 'use_isa',
           'binary_conv2d_reference', 'pack_weight_words', 'unpack_weight_words']
