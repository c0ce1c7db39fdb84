"""Improved precision and recall (Kynkaanniemi et al. 2019, arXiv:1904.06991) as a torchmetrics metric.

Each set's manifold is the union of balls around its samples, each ball reaching the sample's k-th nearest
neighbour in its own set (k = 3, the paper's and torch-fidelity's default):

    precision = |{fake inside the real manifold}| / |fake|,   recall = |{real inside the fake manifold}| / |real|

The maths is torch-fidelity's own ``calculate_precision_recall_part`` (what its ``prc`` computes with
``save_cpu_ram``: distances in blocks of ``batch_size`` rows, never the full N x N matrix). What this class
adds is the state: real and generated features are list states gathered across DDP ranks at ``compute()``,
like KID's, and the real features survive ``reset()``.

The radii shrink as a set grows, so the two sets must be of the same size for the scores to mean what the
paper means (it and StyleGAN2-ADA's ``pr50k3`` use 50,000 of each). torch-fidelity has no option for this
(its ``prc`` takes every sample of both inputs). Here the real set is StyleGAN2-ADA's: ``pr50k3`` computes
the real features with ``max_items=50000`` over the dataset in order, that is the *first* real images, as
many as the generated ones (``first_real``).
"""
import torch
from torch_fidelity.metric_prc import calculate_precision_recall_part
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def first_real(real: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``min(n, len(real))`` rows of ``real`` (N, F), in the dataset's order: StyleGAN2-ADA's ``pr50k3``
    real set (``max_items`` of its in-order feature pass) for ``n`` generated samples."""
    return real[:n]


def precision_recall(fake: torch.Tensor, real: torch.Tensor, neighborhood: int = 3,
                     batch_size: int = 10_000) -> tuple[float, float]:
    """Precision and recall of features ``fake`` (M, F) against ``real`` (N, F), by torch-fidelity."""
    for name, features in (("generated", fake), ("real", real)):
        if len(features) <= neighborhood:  # kthvalue(k + 1) of a row of N distances needs N > k
            raise ValueError(f"precision/recall with neighborhood {neighborhood} needs more than {neighborhood} "
                             f"{name} samples, got {len(features)}")
    # torch-fidelity's convention: features_1 is generated, features_2 is real
    return calculate_precision_recall_part(fake, real, neighborhood, batch_size)


class PrecisionRecall(Metric):
    """``compute()`` -> (precision, recall) of the generated features against as many of the first real ones.

    Args:
        neighborhood: k of the k-th nearest neighbour that sets each ball's radius (3, as the paper).
        batch_size: rows of the distance matrix computed at once (10,000, as torch-fidelity).
        reset_real_features: whether ``reset()`` also drops the real features (as torchmetrics' KID).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, neighborhood: int = 3, batch_size: int = 10_000, reset_real_features: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        self.neighborhood, self.batch_size, self.reset_real_features = neighborhood, batch_size, reset_real_features
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update(self, features: torch.Tensor, real: bool) -> None:  # (B, F)
        (self.real_features if real else self.fake_features).append(features)

    def compute(self) -> tuple[float, float]:
        fake, real = dim_zero_cat(self.fake_features), dim_zero_cat(self.real_features)
        return precision_recall(fake, first_real(real, len(fake)), self.neighborhood, self.batch_size)

    def reset(self) -> None:
        if self.reset_real_features:
            super().reset()
            return
        kept = self._defaults.pop("real_features")  # as torchmetrics' KID: reset() leaves this state alone
        super().reset()
        self._defaults["real_features"] = kept
