"""Models: toy models with known answers (`susc.models.toy`); other model families live beside it."""
from .toy import (Toy, anharmonic, deep_linear_network, dln_learning_coefficient, linear_regression,
                  logistic_regression, monomial, normal_crossing, polynomial_regression, quadratic,
                  reduced_rank_regression, rrr_learning_coefficient, train_rrr)

__all__ = [
    "Toy", "quadratic", "anharmonic", "monomial", "normal_crossing", "polynomial_regression",
    "reduced_rank_regression", "train_rrr", "deep_linear_network", "linear_regression",
    "logistic_regression", "rrr_learning_coefficient", "dln_learning_coefficient",
]

from .masks import (component_masks, embedding_mask, head_mask, layer_mask, mlp_mask,
                    param_subset_mask, unembedding_mask)
from .transformer import TransformerConfig

__all__ += ["component_masks", "head_mask", "layer_mask", "mlp_mask", "embedding_mask", "unembedding_mask",
            "param_subset_mask", "TransformerConfig"]
