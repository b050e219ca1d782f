"""The roofline of this CPU's popcount core: the peak binary multiply-add rate of one core, for each
instruction-set level the kernels' dispatcher knows and this CPU supports.

Each level runs the kernels' own XOR-popcount inner loop (``bnas_zoo_kernels::popcount_peak``) on operands
already packed and resident in L1: no packing, no im2col, no output, one thread. What a binary layer reaches
is reported as a fraction of the level in use (``bnas-zoo bench MODEL --layers``).

    python benchmarks/popcount_peak.py
    python benchmarks/popcount_peak.py --seconds 0.5 --tries 9
"""
from __future__ import annotations

import argparse

import torch

from bnas_zoo import kernels
from bnas_zoo.bench import popcount_peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--seconds', type=float, default=0.2, help='CPU seconds per try (default: 0.2)')
    ap.add_argument('--tries', type=int, default=5, help='tries per level; the best is kept (default: 5)')
    args = ap.parse_args()
    if kernels.backend() != 'compiled':
        raise SystemExit(f'the compiled kernels are not available: {kernels.build_error()}')
    torch.set_num_threads(1)
    print(f'kernels: compiled; in use: {kernels.cpu_isa()}; this CPU supports: {", ".join(kernels.cpu_isa_levels())}')
    print(f"{'level':<16} {'G binary MAC/s/core':>20}")
    for level in kernels.cpu_isa_levels():
        print(f'{level:<16} {popcount_peak(level, args.seconds, args.tries) / 1e9:>20.0f}', flush=True)


if __name__ == '__main__':
    main()
