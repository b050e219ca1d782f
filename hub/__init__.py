"""Hugging Face Hub publishing of bnas_zoo weights (installed as ``bnas_zoo.hub``)."""
