"""Training, validation and search entrypoints (installed as ``bnas_zoo.train``)."""
