"""bnas_zoo: the searched binary (XNOR) networks of BNAS as timm models.

``import bnas_zoo`` registers the models in timm::

    import timm, bnas_zoo
    model = timm.create_model('bnas_d', pretrained=True)
    fast = bnas_zoo.deploy(model)   # inference on packed bits (XNOR-popcount kernels)
"""
from .binary import (
    BinaryConv2d, BinaryConvBlock, attach_latent_projection, binary_convs, binary_param_names, ensure_latent_projection,
    project_latent_, sign_ste, xnor_weight,
)
from .errors import BnasError, CheckpointError, GenotypeError, ModelConfigError
from .genotype import PRIMITIVES, Genotype, list_genotypes, load_genotype
from .network import BNASNet
from .packing import load_1bit, save_1bit
from .registry import HUB_ORG, VARIANTS, hub_repo_id
from .deploy import deploy  # noqa: E402  (fast packed-bit inference)
from .kernels import training as _fast_training  # noqa: F401,E402  (installs the binary layers' fast training path)

__version__ = '0.1.0'
