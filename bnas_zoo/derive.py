"""From architecture weights to a genotype (paper Eq. 5), and the diversity regularizer (Eq. 6)."""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch

__all__ = ['derive_cell', 'derive_genotype', 'mean_entropy', 'diversity_regularizer', 'learnable_share']


def derive_cell(probs: torch.Tensor, ops: Sequence[str], steps: int, gamma: float = 1.0,
                keep_zeroise: bool = True) -> List[Tuple[str, int]]:
    """The edges of one cell: for each node the two strongest incoming edges, each with its strongest op.

    The Zeroise probability is divided by ``gamma`` before comparing (gamma = 1 keeps Zeroise as found;
    gamma = 3 for transfer to ImageNet); a selected Zeroise stays in the cell (unlike DARTS).
    ``keep_zeroise=False`` is the DARTS rule (the ablation): Zeroise is never selected, each edge takes its
    best other op and edges are ranked by it.
    """
    if gamma <= 0:
        raise ValueError(f'gamma={gamma}: expected > 0')
    p = probs.detach().double().clone()
    if 'none' in ops:
        z = list(ops).index('none')
        if keep_zeroise:
            p[:, z] = p[:, z] / gamma
        else:
            p[:, z] = -1.0
    edges: List[Tuple[str, int]] = []
    offset = 0
    for i in range(steps):
        n_in = 2 + i
        rows = p[offset:offset + n_in]
        strength, best = rows.max(dim=1)
        top = sorted(range(n_in), key=lambda j: (-strength[j].item(), j))[:2]
        for j in sorted(top):
            edges.append((ops[int(best[j])], j))
        offset += n_in
    return edges


def derive_genotype(probs: Dict[str, torch.Tensor], ops: Sequence[str], steps: int, gamma: float = 1.0,
                    keep_zeroise: bool = True, name: str = 'searched', provenance: Dict = None) -> Dict:
    """The genotype (JSON form) of a supernet's architecture probabilities."""
    concat = list(range(2, 2 + steps))
    return dict(
        name=name,
        normal=[list(e) for e in derive_cell(probs['normal'], ops, steps, gamma, keep_zeroise)],
        normal_concat=concat,
        reduce=[list(e) for e in derive_cell(probs['reduce'], ops, steps, gamma, keep_zeroise)],
        reduce_concat=concat,
        provenance=dict(provenance or {}, gamma=gamma),
    )


def mean_entropy(probs: Dict[str, torch.Tensor]) -> torch.Tensor:
    """H(p): the mean entropy of every edge's op distribution, normal and reduction rows alike."""
    rows = torch.cat([probs['normal'], probs['reduce']], dim=0)
    return -(rows * torch.log(rows.clamp_min(1e-12))).sum(dim=1).mean()


def diversity_regularizer(probs: Dict[str, torch.Tensor], epoch: float, lam: float = 1.0, tau: float = 7.7) -> torch.Tensor:
    """The term added to the architecture loss: -lambda * H(p) * exp(-t / tau) (rewards diverse choices
    early in the search, fading with the epoch t)."""
    return -lam * mean_entropy(probs) * math.exp(-epoch / tau)


def learnable_share(genotype: Dict, ops_with_params: Sequence[str]) -> float:
    """Share of the selected operations that hold parameters (the paper's 'learnable operations')."""
    edges = genotype['normal'] + genotype['reduce']
    return sum(1 for op, _ in edges if op in ops_with_params) / len(edges)
