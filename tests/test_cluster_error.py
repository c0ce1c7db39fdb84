"""Cluster error as Makhzani et al. (2016, Sec. 7) define it: each cluster takes the label of the validation example
most confident in it, and the test set is scored with those labels; beside it the majority-label figure, named
as such. Checked against a plain-loop reading of each definition, on a case where the definitions disagree."""
import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gan_lightning.metrics.clustering import ConfidentLabels, LabelContingency, labelled_cluster_accuracy
from gan_lightning.models import ClusteringAAE
from tests.helpers import RecordWarnings, digits, tiny_trainer, unactionable


def most_confident_labels(q: torch.Tensor, y: torch.Tensor) -> list[int]:
    """The paper's rule, read literally: cluster i takes the label of the example x_n with the largest q(y_i|x_n)."""
    labels = []
    for i in range(q.shape[1]):
        best = max((n for n in range(len(y)) if y[n] >= 0), key=lambda n: q[n, i])
        labels.append(int(y[best]))
    return labels


def error_with(cluster_labels: list[int], q: torch.Tensor, y: torch.Tensor) -> float:
    """Every example takes the label of its argmax cluster; the fraction of labelled examples it gets wrong."""
    scored = [n for n in range(len(y)) if y[n] >= 0]
    return sum(cluster_labels[int(q[n].argmax())] != y[n] for n in scored) / len(scored)


def majority_error(q: torch.Tensor, y: torch.Tensor) -> float:
    """Each cluster takes the most common label among the examples it is then scored on."""
    clusters = q.argmax(1)
    right = sum(max((int((y[clusters == i] == c).sum()) for c in range(int(y.max()) + 1)), default=0)
                for i in range(q.shape[1]))
    return 1 - right / int((y >= 0).sum())


# Two clusters, two labels; rows are q(y|x). Validation: cluster 0 holds labels 1, 0, 0 and is most confident on
# the label-1 example (0.9); cluster 1 holds 1, 0, 0 and is most confident on the label-1 example (0.8).
VAL_Q = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.3, 0.7]])
VAL_Y = torch.tensor([1, 0, 0, 1, 0, 0])
# Test: cluster 0 holds labels 1, 1, 0 and cluster 1 holds 0, 0; the most confident test examples carry label 0.
TEST_Q = torch.tensor([[0.7, 0.3], [0.7, 0.3], [0.99, 0.01], [0.01, 0.99], [0.4, 0.6]])
TEST_Y = torch.tensor([1, 1, 0, 0, 0])


def test_the_three_readings_of_cluster_error_differ_on_the_constructed_case():
    """By hand: validation labels both clusters 1, so 2 of 5 test images are right (paper: 3/5 wrong); the
    majority on the test set labels cluster 0 with 1 and cluster 1 with 0, 4 of 5 right (1/5); labelling by the
    most confident test image (0 and 0) gets 3 of 5 (2/5). The validation split, scored on itself: 2/6 right."""
    assert most_confident_labels(VAL_Q, VAL_Y) == [1, 1]
    assert error_with(most_confident_labels(VAL_Q, VAL_Y), TEST_Q, TEST_Y) == pytest.approx(3 / 5)
    assert majority_error(TEST_Q, TEST_Y) == pytest.approx(1 / 5)
    assert error_with(most_confident_labels(TEST_Q, TEST_Y), TEST_Q, TEST_Y) == pytest.approx(2 / 5)
    assert error_with(most_confident_labels(VAL_Q, VAL_Y), VAL_Q, VAL_Y) == pytest.approx(4 / 6)


def test_confident_labels_and_the_contingency_give_the_papers_error_and_the_majority_one():
    labelling, table = ConfidentLabels(2, 2), LabelContingency(2, 2)
    for rows in (slice(0, 2), slice(2, 6)):  # two batches: the maximum is kept across updates
        labelling.update(VAL_Q[rows].log(), VAL_Y[rows])
    table.update(TEST_Q.argmax(1), TEST_Y)
    scores = table.compute()
    assert labelling.compute().tolist() == most_confident_labels(VAL_Q, VAL_Y)
    assert 1 - labelled_cluster_accuracy(scores["counts"], labelling.compute()) == pytest.approx(
        error_with(most_confident_labels(VAL_Q, VAL_Y), TEST_Q, TEST_Y))
    assert 1 - scores["cluster_accuracy_majority"] == pytest.approx(majority_error(TEST_Q, TEST_Y))


def test_confident_labels_follow_the_definition_on_random_batches_with_unlabelled_examples():
    gen = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(500, 7, generator=gen)
    y = torch.randint(-1, 5, (500,), generator=gen)  # -1: unlabelled, never labels a cluster
    labelling = ConfidentLabels(num_clusters=7, num_labels=5)
    for i in range(0, 500, 64):
        labelling.update(logits[i:i + 64], y[i:i + 64])
    assert labelling.compute().tolist() == most_confident_labels(logits.softmax(1), y)


def test_confident_labels_rank_examples_where_float32_probabilities_saturate():
    """q(y_0|x) = 1 - e^-40 for the first example and 1 - e^-230 for the second: the second is the more confident
    in cluster 0 and gives it its label 1; the first, q(y_1|x) = e^-40 against e^-230, gives cluster 1 its label 0.
    In float32 both q(y_0|x) are 1 and both log q(y_0|x) are 0: a tie that q alone would break by position."""
    logits = torch.tensor([[40.0, 0.0], [30.0, -200.0]])
    assert logits.softmax(1)[:, 0].tolist() == [1.0, 1.0] and logits.log_softmax(1)[:, 0].tolist() == [0.0, 0.0]
    labelling = ConfidentLabels(2, 2)
    labelling.update(logits, torch.tensor([0, 1]))
    assert labelling.compute().tolist() == [1, 0]


def test_labels_beyond_the_table_name_the_setting():
    with pytest.raises(ValueError, match="n_labels"):
        ConfidentLabels(2, 2).update(torch.zeros(1, 2), torch.tensor([2]))


class GivenSplits(L.LightningDataModule):
    """Validation and test splits of given tensors (x holds q(y|x) itself: 1 x 1 x K images)."""

    def __init__(self, val_q, val_y, test_q, test_y):
        super().__init__()
        self.val, self.test = (val_q[:, None, None], val_y), (test_q[:, None, None], test_y)

    def val_dataloader(self):
        return DataLoader(TensorDataset(*self.val), batch_size=4)

    def test_dataloader(self):
        return DataLoader(TensorDataset(*self.test), batch_size=2)


def test_clustering_aae_tests_with_validation_labelled_clusters_and_validates_on_validation_alone(tmp_path):
    model = ClusteringAAE(data_shape=(1, 1, 2), n_classes=2, n_labels=2, latent_dim=1, width=4, discriminator_width=4)
    model.classify = lambda x: x.flatten(1).log()  # q(y|x) = x: the constructed case above
    data = GivenSplits(VAL_Q, VAL_Y, TEST_Q, TEST_Y)
    tested = tiny_trainer(tmp_path).test(model, data, verbose=False)[0]
    paper_labels = most_confident_labels(VAL_Q, VAL_Y)
    assert tested["test/cluster_error"] == pytest.approx(error_with(paper_labels, TEST_Q, TEST_Y))
    assert tested["test/cluster_error_majority"] == pytest.approx(majority_error(TEST_Q, TEST_Y))
    validated = tiny_trainer(tmp_path, limit_val_batches=None).validate(model, data, verbose=False)[0]
    assert validated["val/cluster_error"] == pytest.approx(error_with(paper_labels, VAL_Q, VAL_Y))
    assert validated["val/cluster_error_majority"] == pytest.approx(majority_error(VAL_Q, VAL_Y))
    assert "val/cluster_accuracy" not in validated and "test/cluster_accuracy" not in tested


@pytest.mark.parametrize("validation", ["no data module", "an empty split (data.val_fraction 0)"])
def test_a_test_without_validation_labels_logs_the_majority_figure_alone_and_says_why(tmp_path, validation):
    model = ClusteringAAE(data_shape=(1, 1, 2), n_classes=2, n_labels=2, latent_dim=1, width=4, discriminator_width=4)
    model.classify = lambda x: x.flatten(1).log()
    data = (DataLoader(TensorDataset(TEST_Q[:, None, None], TEST_Y), batch_size=2) if validation == "no data module"
            else GivenSplits(VAL_Q[:0], VAL_Y[:0], TEST_Q, TEST_Y))
    with pytest.warns(UserWarning, match="validation split"):
        tested = tiny_trainer(tmp_path).test(model, data, verbose=False)[0]
    assert set(k for k in tested if "cluster" in k) == {"test/cluster_error_majority"}


@pytest.mark.ddp
def test_two_ranks_test_and_validate_to_the_figures_of_one_process(tmp_path):
    """Each rank labels the clusters on its share of the validation split and scores its share of the test split;
    the states meet in a maximum and a sum, so both figures equal one process's on the whole splits."""
    from tests.test_ddp import player_ddp

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # forked ranks hang with several intra-op threads in the parent (see test_ddp.py)
    try:
        figures = []
        for devices, strategy in ((1, "auto"), (2, player_ddp())):
            torch.manual_seed(0)
            model = ClusteringAAE(data_shape=(1, 8, 8), n_classes=6, n_labels=10, latent_dim=3, width=32,
                                  discriminator_width=32, seed=0)
            trainer = tiny_trainer(tmp_path / str(devices), devices=devices, strategy=strategy, limit_val_batches=None,
                                   callbacks=[RecordWarnings(tmp_path / str(devices))])
            data = lambda: digits(val_fraction=0.125)  # noqa: E731  (224 validation and test images: even, so
            # the evaluation sampler, which leaves out the last n mod world_size examples, keeps them all)
            tested = trainer.test(model, data(), verbose=False)[0]
            validated = trainer.validate(model, data(), verbose=False)[0]
            figures.append({k: v for k, v in {**tested, **validated}.items() if "cluster" in k})
    finally:
        torch.set_num_threads(threads)
    one, two = figures
    assert set(one) == {"test/cluster_error", "test/cluster_error_majority", "val/cluster_error",
                        "val/cluster_error_majority"}
    assert two == pytest.approx(one, abs=1e-6)
    assert unactionable(tmp_path / "2") == []   # the ranks' tables summed: logged as needing no reduction
