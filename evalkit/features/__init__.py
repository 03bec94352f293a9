"""Features: FeatureSet, extraction options and the one encoder identity, the feature cache,
the extraction engine, the loader that ties them together, and the distributed gather."""
