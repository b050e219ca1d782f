"""Hugging Face Hub publishing of bnas_zoo weights (installed as ``bnas_zoo.hub``)."""
from .card import build_model_card
from .publish import PUBLISHED_FILES, PublishResult, build_publish_folder, load_1bit_from_hub, load_model_folder, publish

__all__ = ['PUBLISHED_FILES', 'PublishResult', 'build_model_card', 'build_publish_folder', 'load_1bit_from_hub',
           'load_model_folder', 'publish']
