"""Estimators built on sampled draws: LLC, susceptibilities, the influence matrix (BIF),
structural susceptibilities and patterning."""
from . import patterning
from .influence import BIFResult, bif, influence_matrix
from .llc import LLCEstimate, llc
from .structural import (PCAResult, StructuralResult, pca, stack_masks, standardize, structural_from_results,
                         structural_susceptibilities)
from .susceptibility import (jacobian, mixture_susceptibility, per_sample_susceptibility, reweighting_derivative,
                             susceptibility, susceptibility_from_result)
