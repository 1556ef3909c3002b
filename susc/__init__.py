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
from .sampling.kernel import Context, Kernel, KernelSpec, RunState, build_kernel
from .sampling.observables import Observable, observable
from .sampling.posterior import Posterior, potential_loss
from .sampling.result import SampleResult, StackedResult
from .sampling.runner import SamplingDivergence, sample
from .stats import Estimate, Moments, covariance, covariance_from_moments, ess, mean_estimate, rhat

__version__ = "0.1.0"

# Importing susc changes no global JAX setting: the persistent compilation cache is opt-in through
# susc.config.setup(), which the Makefile, the CLI and the chapters call.

__all__ = [
    "sample", "Posterior", "observable", "Observable", "build_kernel", "Kernel", "KernelSpec", "Context",
    "RunState", "StackedResult", "sgld", "rmsprop_sgld", "sgnht", "SamplingAlgorithm", "SampleResult", "Moments",
    "SamplingDivergence", "potential_loss", "covariance", "covariance_from_moments", "mean_estimate",
    "Estimate", "ess", "rhat", "llc", "LLCEstimate", "nuts", "exact", "classical", "patterning", "config",
    "susceptibility", "mixture_susceptibility", "per_sample_susceptibility", "reweighting_derivative", "jacobian",
    "susceptibility_from_result", "influence_matrix", "bif", "BIFResult", "structural_susceptibilities",
    "structural_from_results", "StructuralResult", "stack_masks", "standardize", "pca", "PCAResult",
]
