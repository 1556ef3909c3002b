"""Data attribution scored against retraining: which training data made this prediction?

Layers: `retrain` (many models retrained at once: the ground truth), `methods` (classical
influence, gradient similarity, projected influence; the BIF is `susc.bif`), `lds` (the linear
datamodeling score, LOO, noisy-label detection metrics). Score sign convention: ``scores[i, j]``
is the predicted change of query j's loss from including training example i (positive = raises).
"""
from .lds import (LDSResult, detection_auc, lds, paired_difference, precision_at_k, random_subsets,
                  spearman_columns)
from .methods import (HessianEigen, bif_scores, classical_influence, gradient_similarity,
                      hessian_eigen, per_example_grads, projected_influence, self_influence)
from .retrain import query_losses, retrain

__all__ = ["retrain", "query_losses", "random_subsets", "lds", "LDSResult", "paired_difference",
           "spearman_columns", "detection_auc", "precision_at_k", "per_example_grads", "hessian_eigen",
           "HessianEigen", "classical_influence", "gradient_similarity", "projected_influence",
           "bif_scores", "self_influence"]
