"""bnas_zoo: the searched binary (XNOR) networks of BNAS as timm models.

``import bnas_zoo`` registers the models in timm (``bnas_mini``, ``bnas_a`` .. ``bnas_h``, ``bnas_d_grouped``,
``bnas_custom``)::

    import timm, bnas_zoo
    model = timm.create_model('local-dir:weights/bnas_d', pretrained=True)   # converted or trained weights
    fast = bnas_zoo.deploy(model)                # inference on packed bits (XNOR-popcount CPU kernels)
    bnas_zoo.save_1bit(model, 'bnas_d-1bit.safetensors')
    fast = bnas_zoo.load_1bit('bnas_d-1bit.safetensors', deploy=True)
    bnas_zoo.export_model(model, 'onnx', 'bnas_d.onnx')                      # runs without bnas_zoo

The public API is :data:`__all__`; ``bnas_zoo.export``, ``bnas_zoo.profile``, ``bnas_zoo.convert``,
``bnas_zoo.hub``, ``bnas_zoo.kernels`` and ``bnas_zoo.train`` are available after ``import bnas_zoo`` too
(imported when first used).
"""
import importlib as _importlib

from .binary import (
    BinaryConv2d, BinaryConvBlock, attach_latent_projection, binary_convs, binary_param_names, ensure_latent_projection,
    project_latent_, sign_ste, xnor_weight,
)
from .errors import BnasError, CheckpointError, GenotypeError, ModelConfigError
from .genotype import PRIMITIVES, Genotype, list_genotypes, load_genotype
from .network import BNASNet
from .packing import load_1bit, save_1bit
from .registry import HUB_ORG, VARIANTS, hub_repo_id, pretrained_hub_id
from .deploy import deploy  # noqa: E402  (fast packed-bit inference)
from .draw import draw_cell
from .kernels import training as _fast_training  # noqa: F401,E402  (installs the binary layers' fast training path)
from .kernels import max_pool as _fast_max_pool  # noqa: F401,E402  (installs the cells' fast max pooling)

__version__ = '0.1.0'

#: public functions of submodules that are imported only when first used (they pull in more libraries)
_LAZY = {
    'export_model': 'export', 'profile_model': 'profile', 'convert_official': 'convert',
    'publish': 'hub', 'build_publish_folder': 'hub', 'load_1bit_from_hub': 'hub',
}
_SUBMODULES = ('bench', 'convert', 'export', 'hub', 'kernels', 'packing', 'profile', 'registry', 'train')

__all__ = [
    # models and their architecture
    'BNASNet', 'VARIANTS', 'Genotype', 'PRIMITIVES', 'load_genotype', 'list_genotypes',
    'HUB_ORG', 'hub_repo_id', 'pretrained_hub_id',
    # binary layers and training
    'BinaryConv2d', 'BinaryConvBlock', 'attach_latent_projection', 'ensure_latent_projection', 'project_latent_',
    'binary_convs', 'binary_param_names', 'sign_ste', 'xnor_weight',
    # inference, files, export, cost, the authors' checkpoints, the Hub
    'deploy', 'save_1bit', 'load_1bit', 'load_1bit_from_hub', 'export_model', 'profile_model', 'convert_official',
    'publish', 'build_publish_folder',
    # errors
    'BnasError', 'CheckpointError', 'GenotypeError', 'ModelConfigError',
    '__version__',
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(_importlib.import_module(f'{__name__}.{_LAZY[name]}'), name)
    if name in _SUBMODULES:
        return _importlib.import_module(f'{__name__}.{name}')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__():
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
