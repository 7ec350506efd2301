"""biomint's pipeline: the CLI, stages, seeding, sharding on Dask, manifests, resume, validation."""
