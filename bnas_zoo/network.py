"""BNAS networks: a stem, a stack of compiled cells, global pooling and a classifier.

:class:`BNASNet` is a first-class timm model: ``forward_features``, ``forward_head(pre_logits=)``,
``reset_classifier``, ``forward_intermediates``, ``prune_intermediate_layers``, grad checkpointing,
``group_matcher``; it traces with torch.fx and exports with torch.export.
"""
# no `from __future__ import annotations`: torch.fx writes string annotations into the traced code, which
# TorchScript (timm's fx + script test) cannot read
from typing import Any, Dict, List, Optional, Set, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import _assert, create_classifier
from timm.models._features import feature_take_indices
from torch.utils.checkpoint import checkpoint

from .binary import binary_param_names, ensure_latent_projection
from .cell import Cell, restore_tail
from .compiler import compile_cell, last_cell_fp_slots
from .errors import GenotypeError, ModelConfigError
from .genotype import Genotype, GenotypeSource, load_genotype

__all__ = ['BNASNet', 'CifarStem', 'ImageNetStem0', 'ImageNetStem1', 'STEMS']

STEMS = ('cifar', 'imagenet')


class CifarStem(nn.Sequential):
    """CIFAR stem: BatchNorm -> Conv2d(3x3) -> ReLU, full precision."""

    def __init__(self, in_chans: int, out_chs: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_chans)
        self.conv = nn.Conv2d(in_chans, out_chs, 3, padding=1, bias=False)
        self.act = nn.ReLU()


class ImageNetStem0(nn.Sequential):
    """ImageNet stem0: Conv(3x3, s2) -> BN -> ReLU -> Conv(3x3, s2) -> BN, full precision (1/4 resolution).

    ``groups``: group count of the second conv (the first reads the image's channels and is never grouped).
    """

    def __init__(self, in_chans: int, out_chs: int, groups: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chs // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs // 2)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(out_chs // 2, out_chs, 3, stride=2, padding=1, bias=False, groups=groups)
        self.bn2 = nn.BatchNorm2d(out_chs)


class ImageNetStem1(nn.Sequential):
    """ImageNet stem1: ReLU -> Conv(3x3, s2) -> BN, full precision (1/8 resolution); ``groups`` as stem0's."""

    def __init__(self, chs: int, groups: int = 1):
        super().__init__()
        self.act = nn.ReLU()
        self.conv = nn.Conv2d(chs, chs, 3, stride=2, padding=1, bias=False, groups=groups)
        self.bn = nn.BatchNorm2d(chs)


def _check_groups(stem: str, channels: int, layers: int, stem_groups: int, shortcut_groups: int) -> None:
    """Group counts that divide the channels of every layer they apply to, else a ModelConfigError."""
    for name, g in (('stem_groups', stem_groups), ('shortcut_groups', shortcut_groups)):
        if not isinstance(g, int) or isinstance(g, bool) or g < 1:
            raise ModelConfigError(f'{name}={g!r}: expected an integer >= 1')
    if stem_groups > 1:
        if stem != 'imagenet':
            raise ModelConfigError(
                f'stem_groups={stem_groups}: the CIFAR stem has a single convolution, over the image\'s channels, '
                f'which is not grouped; stem_groups applies to the ImageNet stem')
        if channels % (2 * stem_groups):
            raise ModelConfigError(
                f'stem_groups={stem_groups}: must divide the stem widths channels/2 = {channels // 2} and '
                f'channels = {channels}; choose channels divisible by {2 * stem_groups}')
    if shortcut_groups > 1:
        # the two shortcuts map the previous cell's 4*C to 4*2C: widths 4*C0, 8*C0 and 16*C0
        widths = {4 * channels, 8 * channels, 16 * channels}
        bad = sorted(w for w in widths if w % shortcut_groups)
        if bad:
            raise ModelConfigError(f'shortcut_groups={shortcut_groups}: must divide the shortcut widths; '
                                   f'{", ".join(map(str, bad))} are not multiples of {shortcut_groups}')


class BNASNet(nn.Module):
    """A BNAS binary network built from a genotype.

    Args:
        genotype: a bundled genotype name, a JSON path, a dict or a :class:`Genotype`.
        layers: number of cells L; reduction cells sit at ``L // 3`` and ``2 * L // 3``.
        channels: C0, the node width of the first cell (doubled at each reduction).
        stem: ``"cifar"`` (32x32 inputs) or ``"imagenet"`` (224x224 inputs, 1/8 resolution before cell 0).
        num_classes, in_chans, global_pool, drop_rate: as every timm model.
        drop_path_rate: drop-path probability of each edge output (training only).
        fully_binary: binarize also the two convolutions of the last cell that the release keeps in full
            precision. The default, False, is the released network.
        inter_cell_skip: add the inter-cell skip connections (the BNAS template); False for ablations.
        stem_groups: group count of the full-precision stem convolutions after the first (ImageNet stem:
            ``stem0.conv2`` and ``stem1.conv``; the first reads the image's channels). 1 is the release.
        shortcut_groups: group count of the full-precision 2x2 reduction shortcuts. 1 is the release.
            Grouping divides a layer's multiply-adds by the group count, which the paper's "dagger" models
            spend on more channels (``channels``); see ``bnas_d_grouped``.
    """

    def __init__(
            self,
            genotype: GenotypeSource,
            layers: int,
            channels: int,
            stem: str = 'cifar',
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            fully_binary: bool = False,
            inter_cell_skip: bool = True,
            stem_groups: int = 1,
            shortcut_groups: int = 1,
    ):
        super().__init__()
        if stem not in STEMS:
            raise ModelConfigError(f"stem={stem!r}: unknown stem; expected one of {', '.join(STEMS)}")
        if not isinstance(layers, int) or layers < 3:
            raise ModelConfigError(f'layers={layers!r}: expected an integer >= 3 (two reduction cells and a normal one)')
        if not isinstance(channels, int) or channels < 2 or (stem == 'imagenet' and channels % 2):
            raise ModelConfigError(
                f'channels={channels!r}: expected an integer >= 2' + (' and even for the ImageNet stem' if stem == 'imagenet' else ''))
        if in_chans < 1:
            raise ModelConfigError(f'in_chans={in_chans!r}: expected >= 1')
        _check_groups(stem, channels, layers, stem_groups, shortcut_groups)
        self.genotype: Genotype = load_genotype(genotype)
        self.layers = layers
        self.channels = channels
        self.stem_type = stem
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.fully_binary = fully_binary
        self.inter_cell_skip = inter_cell_skip
        self.stem_groups = stem_groups
        self.shortcut_groups = shortcut_groups
        self.grad_checkpointing = False
        self.reduction_cells = (layers // 3, 2 * layers // 3)

        # the stem(s) of the other type are None, which TorchScript prunes from _stem
        self.stem = None
        self.stem0 = None
        self.stem1 = None
        if stem == 'cifar':
            self.stem = CifarStem(in_chans, 3 * channels)
            c_pp = c_p = 3 * channels
            reduction_prev = False
            stem_info = dict(num_chs=3 * channels, reduction=1, module='stem')
            cell_reduction = 1
            self.input_multiple = 4
        else:
            self.stem0 = ImageNetStem0(in_chans, channels, groups=stem_groups)
            self.stem1 = ImageNetStem1(channels, groups=stem_groups)
            c_pp = c_p = channels
            reduction_prev = True  # cell 0's input 0 (stem0) has twice the resolution of input 1 (stem1)
            stem_info = dict(num_chs=channels, reduction=4, module='stem0')
            cell_reduction = 8
            self.input_multiple = 32

        self.feature_info: List[Dict[str, Any]] = [stem_info]
        self._feature_cells = []  # type: List[int]
        c_curr = channels
        cells = []
        depends = [True, True]  # whether cell i's inputs (s0, s1) depend on the network's input
        for i in range(layers):
            reduction = i in self.reduction_cells
            if reduction:
                c_curr *= 2
                cell_reduction *= 2
            edges, concat = self.genotype.cell(reduction)
            plan = compile_cell(edges, concat, reduction, skip=inter_cell_skip and i > 0)
            fp_slots = last_cell_fp_slots(edges, fully_binary) if i == layers - 1 else frozenset()
            cell = Cell(
                plan, c_pp, c_p, c_curr, reduction_prev, skip=inter_cell_skip and i > 0,
                preprocess0_affine=stem != 'cifar', fp_slots=fp_slots, shortcut_groups=shortcut_groups)
            cells.append(cell)
            reads = {plan.edges[k][1] for k in plan.live_edges}
            depends = [depends[1], any(depends[j] for j in (0, 1) if j in reads) or (cell.skip and depends[1])]
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.out_chs
            if i + 1 in self.reduction_cells or i == layers - 1:
                self.feature_info.append(dict(num_chs=c_p, reduction=cell_reduction, module=f'cells.{i}'))
                self._feature_cells.append(i)
        if not depends[1]:
            raise GenotypeError(
                f'genotype {self.genotype.name!r}: with layers={layers}, every path from the input to the output '
                f"passes through Zeroise ('none'): the network's output would ignore its input; expected a cell "
                f'with at least one operation other than none on a path from its inputs to its output')
        # identically-zero trailing channels of the cell outputs are not stored (Cell.set_zero_tails)
        tails = [0, 0]
        for cell in cells:
            tails = [tails[1], cell.set_zero_tails(tails[0], tails[1])]
        self.cells = nn.ModuleList(cells)

        self.num_features = self.head_hidden_size = c_p
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        self.set_drop_path(drop_path_rate)
        ensure_latent_projection(self)  # the release's in-place latent projection, with any optimizer

    def architecture_args(self) -> Dict[str, Any]:
        """The JSON-serialisable arguments that rebuild this architecture (the genotype itself included)."""
        args = dict(genotype=self.genotype.to_dict(), layers=self.layers, channels=self.channels, stem=self.stem_type,
                    fully_binary=self.fully_binary, inter_cell_skip=self.inter_cell_skip)
        if self.stem_groups != 1 or self.shortcut_groups != 1:
            args.update(stem_groups=self.stem_groups, shortcut_groups=self.shortcut_groups)
        return args

    # --- timm interface -------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r'^stem', blocks=r'^cells\.(\d+)')

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        """The latent binary weights: no weight decay on them, as the release (timm's optimizer factory
        ``create_optimizer_v2`` reads this; 1-d parameters, BatchNorm and biases, are excluded by timm too)."""
        return binary_param_names(self)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    def set_drop_path(self, drop_path_rate: float) -> None:
        """Set the drop-path probability of every edge (the release raises it linearly during training)."""
        self.drop_path_rate = drop_path_rate
        for cell in self.cells:
            cell.drop_path_prob = drop_path_rate

    # --- forward --------------------------------------------------------------------------------
    def _check_input(self, x: torch.Tensor) -> None:
        _assert(x.ndim == 4, 'expected a 4-D input batch (N, C, H, W)')
        _assert(x.shape[1] == self.in_chans,
                f'this network takes {self.in_chans}-channel images (N, {self.in_chans}, H, W); '
                f'create it with in_chans=<channels> for other inputs')
        for dim in (2, 3):
            _assert(x.shape[dim] % self.input_multiple == 0,
                    f'input height and width must be multiples of {self.input_multiple} for the {self.stem_type} stem')

    def _stem(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.stem is not None:
            s = self.stem(x)
            return s, s
        assert self.stem0 is not None and self.stem1 is not None
        s0 = self.stem0(x)
        return s0, self.stem1(s0)

    @torch.jit.ignore
    def _cell(self, cell: nn.Module, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing:
            return checkpoint(cell, s0, s1, use_reentrant=False)
        return cell(s0, s1)

    @torch.jit.ignore
    def _training_hooks(self) -> None:
        """Training forward: (re)attach the latent projection hooks to weights that lack them (a replaced or
        copied parameter, one unfrozen since); a no-op for each weight that has its hook."""
        if self.training and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            ensure_latent_projection(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if not torch.jit.is_scripting():
            self._training_hooks()
        s0, s1 = self._stem(x)
        tail = 0
        if torch.jit.is_scripting():
            for cell in self.cells:  # TorchScript: no grad checkpointing, modules are not arguments
                s0, s1 = s1, cell(s0, s1)
                tail = cell.out_tail
        else:
            for cell in self.cells:
                s0, s1 = s1, self._cell(cell, s0, s1)
                tail = cell.out_tail
        return restore_tail(s1, tail)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward returning the feature levels of ``feature_info`` (stem, then the end of each stage).

        Args:
            indices: last n levels if int, all if None, these levels if a sequence.
            norm: no final norm layer exists; accepted for API compatibility.
            stop_early: stop after the last requested level.
            intermediates_only: return only the intermediate features.
        """
        assert output_fmt == 'NCHW', 'Output shape must be NCHW.'
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        self._check_input(x)
        self._training_hooks()
        intermediates = []
        s0, s1 = self._stem(x)
        if 0 in take_indices:
            intermediates.append(s0)
        last_cell = len(self.cells) - 1
        if stop_early or intermediates_only:
            last_cell = self._feature_cells[max_index - 1] if max_index > 0 else -1
        tail = 0
        for i, cell in enumerate(self.cells):
            if i > last_cell:
                break
            s0, s1 = s1, self._cell(cell, s0, s1)
            tail = cell.out_tail
            if i in self._feature_cells and 1 + self._feature_cells.index(i) in take_indices:
                intermediates.append(restore_tail(s1, tail))
        if intermediates_only:
            return intermediates
        return restore_tail(s1, tail), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the cells (and head) that the requested feature levels do not need."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        keep = self._feature_cells[max_index - 1] + 1 if max_index > 0 else 0
        self.cells = self.cells[:keep]
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices
