import json
import os
import sys

# no network here: huggingface_hub reads this when first imported, so before timm is
os.environ['HF_HUB_OFFLINE'] = '1'
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'benchmarks'))  # the release-style reference network (an independent oracle)

LAYOUTS = Path(__file__).resolve().parent / 'data' / 'official_layouts'
ALL_MODELS = ['bnas_mini', 'bnas_a', 'bnas_b', 'bnas_c', 'bnas_d', 'bnas_e', 'bnas_f', 'bnas_g', 'bnas_h']
CIFAR_MODELS = ALL_MODELS[:4]
IMAGENET_MODELS = ALL_MODELS[4:]
#: registered networks that are not in the release (no official layout): our reconstructions
RECONSTRUCTED_MODELS = ['bnas_d_grouped']
#: every registered variant, for timm's model tests
TIMM_MODELS = ALL_MODELS + RECONSTRUCTED_MODELS


def load_layout(name: str) -> dict:
    """Facts of the released network (copied from shared/reference/official_layouts)."""
    return json.loads((LAYOUTS / f'{name}.json').read_text())


def small_input_size(name: str) -> tuple:
    """Inputs small enough for CPU tests: 32x32 for CIFAR models, 64x64 for ImageNet models."""
    return (3, 32, 32) if name in CIFAR_MODELS else (3, 64, 64)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def search_plot_draws(monkeypatch):
    """The epochs of every alphas.png drawn in the test, in order (bnas_zoo.search_plots.plot_search spied on)."""
    import bnas_zoo.search_plots as search_plots
    drawn = []
    plot = search_plots.plot_search
    monkeypatch.setattr(search_plots, 'plot_search', lambda curves: drawn.append(list(curves.epochs)) or plot(curves))
    return drawn
