"""Independent references for every estimator: closed forms and quadrature (`exact`), classical
influence functions and leave-one-out (`classical`), and NUTS (`nuts`)."""
from . import classical, exact
from .nuts import nuts

__all__ = ["classical", "exact", "nuts"]
