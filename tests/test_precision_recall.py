"""Precision and recall (Kynkaanniemi et al. 2019): torch-fidelity's maths, equal-size sets, ImageScores, DDP."""
import math

import pytest
import torch
from torch_fidelity.metric_prc import prc_features_to_metric

from gan_lightning.metrics.image_scores import Dist, ImageScores, chunk
from gan_lightning.metrics.precision_recall import PrecisionRecall, first_real, precision_recall
from tests.helpers import measure_on_ranks


def torch_fidelity_prc(fake: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    """torch-fidelity's prc on features, its defaults (neighbourhood 3, the full distance matrix)."""
    out = prc_features_to_metric(fake, real, verbose=False)
    return out["precision"], out["recall"]


def modes(n: int, which: list[int], seed: int) -> torch.Tensor:
    """``n`` points (n, 2) around the modes ``which`` of a ring of 8 (radius 10, spread 0.5, as the toy data):
    low-dimensional, so that two samples of one distribution cover each other almost entirely at k = 3."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.arange(8) * 2 * math.pi / 8
    centres = 10 * torch.stack([angles.cos(), angles.sin()], 1)
    labels = torch.tensor(which)[torch.randint(len(which), (n,), generator=g)]
    return centres[labels] + 0.5 * torch.randn(n, 2, generator=g)


def test_identical_sets_have_precision_and_recall_one_in_any_order_and_batching():
    features = modes(500, list(range(8)), seed=0)
    metric = PrecisionRecall()
    for batch in features.split(128):
        metric.update(batch, real=True)
    for batch in features[torch.randperm(500, generator=torch.Generator().manual_seed(1))].split(50):
        metric.update(batch, real=False)
    assert metric.compute() == (1.0, 1.0)


def test_fakes_inside_one_mode_have_high_precision_and_low_recall_as_torch_fidelity_computes():
    real, fake = modes(800, list(range(8)), seed=0), modes(800, [3], seed=1)
    precision, recall = precision_recall(fake, real)
    assert precision > 0.9 and recall < 0.25, (precision, recall)  # one mode of 8: recall near 1/8
    assert (precision, recall) == torch_fidelity_prc(fake, real)
    # and the other way round: fakes over every mode against real data of one mode
    precision, recall = precision_recall(real, fake)
    assert precision < 0.25 and recall > 0.9, (precision, recall)


def test_the_real_set_is_the_first_real_features_as_many_as_generated_as_stylegan2_adas_pr50k3():
    """pr50k3: 50k generated against the real features of ``max_items=50000`` in the dataset's order."""
    real, fake = modes(1000, list(range(8)), seed=0), modes(200, list(range(8)), seed=1)
    metric = PrecisionRecall()
    metric.update(real[:600], real=True)
    metric.update(real[600:], real=True)
    metric.update(fake, real=False)
    assert torch.equal(first_real(real, 200), real[:200])
    assert metric.compute() == torch_fidelity_prc(fake, real[:200])
    assert torch_fidelity_prc(fake, real) != torch_fidelity_prc(fake, real[:200])  # the size matters: radii shrink
    assert torch_fidelity_prc(fake, real[-200:]) != torch_fidelity_prc(fake, real[:200])  # and which rows


def test_reset_keeps_the_real_features_when_asked():
    real, fake = modes(300, list(range(8)), seed=0), modes(300, [0, 1], seed=1)
    metric = PrecisionRecall(reset_real_features=False)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    first = metric.compute()
    metric.reset()
    metric.update(fake, real=False)
    assert metric.compute() == first == torch_fidelity_prc(fake, real)


def test_too_few_samples_for_the_neighbourhood_is_an_error_naming_it():
    with pytest.raises(ValueError, match="neighborhood 3 needs more than 3 generated samples, got 3"):
        precision_recall(torch.zeros(3, 4), torch.randn(10, 4))


def test_precision_and_recall_on_the_offline_classifier_name_it_and_match_torch_fidelity(data_dir):
    """Real Fashion-MNIST training images against test images of every class (a perfect generator) and against
    test images of one class (a collapsed one), through ImageScores and the shipped classifier."""
    from gan_lightning.data.sources import load_tensors
    from gan_lightning.metrics.features import build_extractor

    x_train, _ = load_tensors("fashion_mnist", data_dir, "train", download=False)
    x_test, y_test = load_tensors("fashion_mnist", data_dir, "test", download=False)
    real, good, collapsed = x_train[:600], x_test[:300], x_test[y_test == 1][:300]  # class 1: trousers
    extractor = build_extractor("fashion_classifier")
    scores = ImageScores(extractor, "fashion_classifier", ["fid", "prc"])
    scores.load_real(lambda: real.split(128), {"dataset": "test_prc"}, cache_dir=None)
    results = {}
    for name, fake in (("good", good), ("collapsed", collapsed)):
        for batch in fake.split(128):
            scores.add_fake(batch)
        results[name] = scores.compute()
        assert list(results[name]) == scores.score_names() == ["fd_fashion_classifier", "precision_fashion_classifier",
                                                               "recall_fashion_classifier"]
        with torch.no_grad():
            fake_features = extractor(fake)[0]
        expected = torch_fidelity_prc(fake_features, extractor(real)[0].detach()[: len(fake)])
        assert (results[name]["precision_fashion_classifier"], results[name]["recall_fashion_classifier"]) == \
            pytest.approx(expected, abs=1 / len(fake))  # features batched differently: at most a sample flips
    good, collapsed = results["good"], results["collapsed"]
    assert good["precision_fashion_classifier"] > 0.6 and good["recall_fashion_classifier"] > 0.6, good
    assert collapsed["recall_fashion_classifier"] < 0.3 < collapsed["precision_fashion_classifier"], collapsed


# --- DDP ---------------------------------------------------------------------------------------

def _prc_over(dist: Dist, n_real: int, n_fake: int, batch_size: int) -> dict:
    """FD and precision/recall of fixed fake images against fixed real ones, this rank's share of each."""
    from tests.test_image_metrics import SmallExtractor

    g = torch.Generator().manual_seed(1)
    real = torch.randint(0, 256, (n_real, 1, 28, 28), generator=g, dtype=torch.uint8)
    scores = ImageScores(SmallExtractor(), "fashion_classifier", ["fid", "prc"], dist=dist)
    scores.load_real(lambda: chunk(real.split(batch_size), dist.rank, dist.world_size), {"dataset": "test"}, None)
    scores.add_generator(lambda n, noise: torch.rand(n, 1, 28, 28, generator=noise) ** 2 * 2 - 1, n_fake, batch_size)
    return scores.compute()


# (n_real, n_fake, batch_size): more real than fake (the real set is cut), a rank without a fake batch,
# a rank without a real batch
PRC_CASES = [(120, 60, 20), (64, 40, 40), (30, 50, 20)]


@pytest.mark.ddp
def test_two_ranks_gather_the_features_and_give_the_precision_recall_of_one_process(tmp_path):
    per_rank = measure_on_ranks(tmp_path, 2, _prc_over, PRC_CASES)
    single = [_prc_over(Dist(), *case) for case in PRC_CASES]
    for case, ours in zip(PRC_CASES, single, strict=True):
        assert 0 < ours["recall_fashion_classifier"] < 1, (case, ours)  # neither trivially 0 nor 1
    for rank in range(2):
        for case, theirs, ours in zip(PRC_CASES, per_rank[rank], single, strict=True):
            assert theirs.keys() == ours.keys()
            for key in ("precision_fashion_classifier", "recall_fashion_classifier"):
                assert theirs[key] == ours[key], (rank, case, key)


@pytest.mark.slow
def test_the_callback_logs_precision_and_recall_named_after_the_extractor(tmp_path, data_dir):
    from tests.helpers import tiny_trainer
    from tests.test_image_metrics import fashion, image_metrics, tiny_fashion_bigan

    metric = image_metrics(tmp_path, metrics=["fid", "prc"], report_floor=False)
    trainer = tiny_trainer(tmp_path, limit_val_batches=1, num_sanity_val_steps=0, callbacks=[metric])
    trainer.fit(tiny_fashion_bigan(), fashion(data_dir))
    assert set(metric.last) == {"fd_fashion_classifier", "precision_fashion_classifier", "recall_fashion_classifier"}
    for key in ("precision_fashion_classifier", "recall_fashion_classifier"):
        assert 0 <= trainer.callback_metrics[f"val/{key}"].item() <= 1
