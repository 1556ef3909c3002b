"""SGLD-family samplers as ``(init, step)`` pairs of pure functions (see `susc.samplers.base`)."""
from .base import SamplingAlgorithm
from .rmsprop import rmsprop_sgld
from .sgld import sgld
from .sgnht import sgnht

__all__ = ["SamplingAlgorithm", "sgld", "rmsprop_sgld", "sgnht"]
