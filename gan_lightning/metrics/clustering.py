"""Classification error and cluster accuracy from one table of counts, summed over batches and ranks.

``counts[k, c]`` is the number of examples assigned to cluster (or predicted class) k whose label is c.

- accuracy:          trace(counts) / total, when clusters are the classes (the semi-supervised AAE)
- cluster accuracy:  sum_k max_c counts[k, c] / total: each cluster is mapped to its majority label
  (Makhzani et al. 2016, Sec. 7, report the error 1 - cluster accuracy: 9.55 % with 16 clusters on MNIST)
"""
import torch
from torchmetrics import Metric


class LabelContingency(Metric):
    full_state_update = False

    def __init__(self, num_clusters: int, num_labels: int, **kwargs):
        super().__init__(**kwargs)
        self.num_clusters, self.num_labels = num_clusters, num_labels
        self.add_state("counts", default=torch.zeros(num_clusters, num_labels, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, clusters: torch.Tensor, labels: torch.Tensor) -> None:
        """Count each example's (cluster, label) pair; unlabelled examples (label -1) are skipped."""
        keep = labels >= 0
        if (labels[keep] >= self.num_labels).any():
            raise ValueError(f"a label >= {self.num_labels} reached a table of {self.num_labels} labels: set the "
                             "model's n_labels to the data's number of classes")
        pairs = clusters[keep].long() * self.num_labels + labels[keep].long()
        self.counts += torch.bincount(pairs, minlength=self.num_clusters * self.num_labels).view_as(self.counts)

    def compute(self) -> dict[str, torch.Tensor]:
        total = self.counts.sum().clamp(min=1).float()
        out = {"cluster_accuracy": self.counts.max(dim=1).values.sum() / total}
        if self.num_clusters == self.num_labels:
            out["accuracy"] = self.counts.trace() / total
        return out
