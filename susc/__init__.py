"""susc — susceptibilities in Bayesian learning, in JAX.

Conventions (theory.md §1, the book's notation page): the localized tempered posterior is
p(w) ∝ exp{−nβ L_n(w) − (γ/2)‖w − w*‖²}; the susceptibility of an observable φ to a data
perturbation ΔL is χ = (1/nβ) ∂_h⟨φ⟩ = −Cov[φ, ΔL] and the Jacobian is nβ·χ; the SGLD step is
w ← w − (ε/2)[nβ ∇L_B(w) + γ(w − w*)] + √ε ξ (blackjax's h = ε/2).
"""
from . import config
from .estimators import patterning
from .estimators.influence import BIFResult, bif, influence_matrix
from .estimators.llc import LLCEstimate, llc
from .estimators.structural import (PCAResult, StructuralResult, pca, stack_masks, standardize,
                                    structural_from_results, structural_susceptibilities)
from .estimators.susceptibility import (jacobian, mixture_susceptibility, per_sample_susceptibility,
                                        reweighting_derivative, susceptibility, susceptibility_from_result)
from .reference import classical, exact
from .reference.nuts import nuts
from .samplers import SamplingAlgorithm, rmsprop_sgld, sgld, sgnht
from .sampling.posterior import potential_loss
from .sampling.result import SampleResult
from .sampling.runner import SamplingDivergence, sample
from .stats import Estimate, Moments, covariance, covariance_from_moments, ess, mean_estimate, rhat

__version__ = "0.1.0"

config.setup()  # JAX's persistent compilation cache on by default (~/.cache/susc/jax or $JAX_COMPILATION_CACHE_DIR)

__all__ = [
    "sample", "sgld", "rmsprop_sgld", "sgnht", "SamplingAlgorithm", "SampleResult", "Moments",
    "SamplingDivergence", "potential_loss", "covariance", "covariance_from_moments", "mean_estimate",
    "Estimate", "ess", "rhat", "llc", "LLCEstimate", "nuts", "exact", "classical", "patterning", "config",
    "susceptibility", "mixture_susceptibility", "per_sample_susceptibility", "reweighting_derivative", "jacobian",
    "susceptibility_from_result", "influence_matrix", "bif", "BIFResult", "structural_susceptibilities",
    "structural_from_results", "StructuralResult", "stack_masks", "standardize", "pca", "PCAResult",
]
