# Data package: the bundled genotype JSON files and their JSON Schema (installed as ``bnas_zoo.genotypes``).
