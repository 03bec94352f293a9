"""Shared building blocks of the metric functions (no metric is registered here).

``knn``: exact k-nearest-neighbour distances and sphere membership on any device, with a
cheap screening pass and an exact float64 refinement; ``common``: input checks, seeded
generators, tensor conversion and row chunking used by every metric module.
"""
