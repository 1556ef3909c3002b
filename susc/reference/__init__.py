"""Independent references for every estimator: closed forms (`exact`, which also re-exports the
quadrature references of `quadrature`), classical influence functions and leave-one-out
(`classical`), and NUTS (`nuts`)."""
from . import classical, exact, quadrature
from .nuts import nuts

__all__ = ["classical", "exact", "nuts", "quadrature"]
