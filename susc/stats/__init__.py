"""Statistics of draws: streaming moments, covariances with batch-means standard errors, ESS/R̂."""
from .covariance import Estimate, covariance, covariance_from_moments, ess, mean_estimate, rhat
from .moments import Moments
from .regression import OriginSlope, origin_slope

__all__ = ["Estimate", "Moments", "covariance", "covariance_from_moments", "ess", "mean_estimate", "rhat",
           "OriginSlope", "origin_slope"]
