"""Sampling: the localized posterior, compiled chain kernels, the `sample` driver, checkpoints."""
