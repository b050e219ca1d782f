"""Data loaders of training and search: worker processes sized to the machine and the device, pinned memory
and non-blocking copies on a GPU, and augmentation seeded per sample, so that a run is the same whatever the
number of workers and resumes exactly.

Each sample's random augmentation is drawn from generators seeded by (run seed, epoch, sample index) alone:
not from the worker that happens to load it, nor from what the training process drew before. So ``--workers``
changes only the speed, never the run. The epoch's order comes from a generator seeded by (seed, epoch), or
from ``DistributedSampler`` under torchrun. Plain ``torch.utils.data.DataLoader`` (timm's ``create_loader``
builds its own samplers, which this control needs to replace).
"""
from __future__ import annotations

import os
import random
from typing import Iterator, Tuple

import numpy as np
import torch
import torch.distributed as dist

__all__ = ['SeededSamples', 'EpochSampler', 'make_loader', 'set_epoch', 'default_workers', 'sample_seed',
           'to_device']


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] >> 1)


class SeededSamples(torch.utils.data.Dataset):
    """``dataset[index]`` with torch's CPU generator, Python's and numpy's seeded by (seed, epoch, index); read
    with ``(epoch, index)`` keys (:class:`EpochSampler`). In the training process itself (no workers) the
    generators are put back afterwards, so the training's own random draws (drop-path, dropout) do not depend
    on the data either."""

    def __init__(self, dataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]):
        epoch, index = key
        s = sample_seed(self.seed, epoch, index)
        in_worker = torch.utils.data.get_worker_info() is not None
        if not in_worker:
            saved = torch.default_generator.get_state(), random.getstate(), np.random.get_state()
        torch.default_generator.manual_seed(s)
        random.seed(s)
        np.random.seed(s % (1 << 32))
        try:
            return self.dataset[index]
        finally:
            if not in_worker:
                torch.default_generator.set_state(saved[0])
                random.setstate(saved[1])
                np.random.set_state(saved[2])


class EpochSampler(torch.utils.data.Sampler):
    """The (epoch, index) keys of the epoch set by :meth:`set_epoch`: all indices in a (seed, epoch)-seeded
    random order (``shuffle``) or in order; this process's share of them under torch.distributed
    (``DistributedSampler``)."""

    def __init__(self, length: int, seed: int, shuffle: bool, drop_last: bool):
        self.length, self.seed, self.shuffle, self.drop_last = length, seed, shuffle, drop_last
        self.distributed = dist.is_available() and dist.is_initialized()
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.distributed:
            sampler = torch.utils.data.DistributedSampler(range(self.length), shuffle=self.shuffle, seed=self.seed,
                                                          drop_last=self.drop_last)
            sampler.set_epoch(epoch)
            self.indices = list(sampler)
        elif self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1000 + epoch)  # the order of an epoch depends on it alone
            self.indices = torch.randperm(self.length, generator=g).tolist()
        else:
            self.indices = list(range(self.length))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        return ((self.epoch, i) for i in self.indices)


def default_workers(device: torch.device, dataset=None) -> int:
    """Data-loading processes per training process when --workers is not given: none for a dataset held in
    memory (the embedded digits, tensors: nothing to decode); on a GPU, up to 8 of this process's share of the
    CPU cores (decoding must keep up with the device), one core left for the training process; on the CPU,
    where decoding and training share the cores, one process per 4 cores: none below 4 cores, where a worker
    process only takes a core from the training step (measured on 2 cores: a PNG folder trains at 0.85x a
    synthetic step with one worker, 0.93x without, ``benchmarks/data_pipeline.py``)."""
    if dataset is not None and _in_memory(dataset):
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    share = max(1, cpus // max(1, int(os.environ.get('LOCAL_WORLD_SIZE', '1'))))
    if device.type == 'cuda':
        return max(1, min(8, share - 1))
    return share // 4


def _in_memory(dataset) -> bool:
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    return isinstance(dataset, torch.utils.data.TensorDataset) or bool(getattr(dataset, 'in_memory', False))


def make_loader(dataset, batch_size: int, seed: int, shuffle: bool, drop_last: bool, workers: int,
                device: torch.device) -> torch.utils.data.DataLoader:
    """The loader of ``dataset`` for a whole run (see the module's docstring); call :func:`set_epoch` before
    each epoch. Its worker processes persist over the epochs; pinned memory on a GPU."""
    if isinstance(dataset, torch.utils.data.IterableDataset):  # a streamed dataset (wds/, hfids/): its own order
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers, drop_last=drop_last,
                                           pin_memory=device.type == 'cuda')
    # its own generator: the loader's draws (the workers' base seed) leave the training's generator alone
    return torch.utils.data.DataLoader(
        SeededSamples(dataset, seed), batch_size=batch_size, sampler=EpochSampler(len(dataset), seed, shuffle, drop_last),
        num_workers=workers, drop_last=drop_last, pin_memory=device.type == 'cuda', persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None, generator=torch.Generator().manual_seed(seed))


def set_epoch(loader: torch.utils.data.DataLoader, epoch: int) -> torch.utils.data.DataLoader:
    """Make ``loader`` yield ``epoch``'s samples (order and augmentation); returns it."""
    if isinstance(loader.sampler, EpochSampler):
        loader.sampler.set_epoch(epoch)
    elif hasattr(loader.dataset, 'set_epoch'):
        loader.dataset.set_epoch(epoch)
    return loader


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """A batch on ``device`` (non-blocking from pinned memory), channels-last if asked."""
    x = x.to(device, non_blocking=device.type == 'cuda')
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
