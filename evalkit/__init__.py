"""evalkit: fast, reproducible metrics for image generative models."""
__version__ = "0.1.0"
