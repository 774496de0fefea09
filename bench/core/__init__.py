"""The lowest layer: configuration, the results schema, errors, paths, atomic files,
secrets, processes, provenance, the GPU's identity, and sizes that follow from a model's
architecture facts. It imports nothing else of bench."""
