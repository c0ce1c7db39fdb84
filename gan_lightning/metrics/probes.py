"""Encoder probes (BiGAN/ALI evaluation): how much class information E(x) keeps, next to raw pixels.

- 1-NN accuracy: each test point takes the label of its nearest training point (Euclidean distance
  on the features), the BiGAN paper's protocol (97.35 % on MNIST, on par with pixels). The paper probes
  two layers of the encoder: E(x) itself and its penultimate layer (``penultimate_features``: the input
  of the encoder's last linear layer, e.g. the 1024 units before BiGAN's 50-d output).
- Linear-probe accuracy: multinomial logistic regression (scikit-learn, 200 L-BFGS steps) on standardised
  features.
- Reconstruction MSE: mean of ``(x - G(E(x)))^2`` in the model's [-1, 1] range.
- Paired comparison of two 1-NN classifiers on the same test images (``paired_comparison``): McNemar's exact
  test on the images that one gets right and the other wrong. Two accuracies 0.2 points apart on 10,000 test
  images are not told apart by their difference alone; the test says whether they are.
"""
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


@torch.no_grad()
def one_nn_predictions(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
                       chunk: int = 1024) -> torch.Tensor:
    """The label of each test point's nearest training point (Euclidean distance)."""
    train, test = train.flatten(1).float(), test.flatten(1).float()
    train_sq = (train * train).sum(1)
    nearest = []
    for i in range(0, len(test), chunk):
        distance = train_sq[None, :] - 2 * test[i:i + chunk] @ train.T  # + |q|^2, the same for every candidate
        nearest.append(distance.argmin(1))
    return train_labels[torch.cat(nearest)] if nearest else train_labels[:0]


def one_nn_accuracy(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
                    test_labels: torch.Tensor, chunk: int = 1024) -> float:
    """The fraction of test points whose nearest training point has their label."""
    return fraction(one_nn_predictions(train, train_labels, test, chunk) == test_labels)


def fraction(correct: torch.Tensor) -> float:
    """Hits over trials as an exact Python float: 0.8073, not float32's 0.80729997."""
    return int(correct.sum()) / len(correct)


def paired_comparison(correct_a: torch.Tensor, correct_b: torch.Tensor) -> dict[str, float]:
    """McNemar's exact test of two classifiers scored on the same test points (``correct_*``: one bool each).

    Only the discordant points count: ``a_only`` that A gets right and B wrong, ``b_only`` the reverse. Under
    the null hypothesis of equal accuracy each discordant point is a fair coin, so the two-sided p-value is the
    binomial test's (scipy). Returns the accuracy difference A - B, the two counts and ``p_value``.
    """
    from scipy.stats import binomtest

    correct_a, correct_b = correct_a.bool().flatten(), correct_b.bool().flatten()
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"paired_comparison needs the same test points: {len(correct_a)} against {len(correct_b)}")
    a_only, b_only = int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum())
    p_value = binomtest(a_only, a_only + b_only).pvalue if a_only + b_only else 1.0
    return {"difference": (a_only - b_only) / len(correct_a), "a_only": a_only, "b_only": b_only,
            "p_value": float(p_value)}


def linear_probe_accuracy(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor,
                          test_labels: torch.Tensor, max_iter: int = 200) -> float:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    with warnings.catch_warnings():  # a fixed budget of L-BFGS steps is the protocol, not a fault to report
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(train.flatten(1).double().cpu().numpy(), train_labels.cpu().numpy())
    return float(probe.score(test.flatten(1).double().cpu().numpy(), test_labels.cpu().numpy()))


@torch.no_grad()
def batched(fn: Callable[..., torch.Tensor], x: torch.Tensor, device: torch.device,
            batch_size: int = 500, labels: torch.Tensor | None = None) -> torch.Tensor:
    """fn over x (and its labels, when given) in batches on ``device``, results gathered on the CPU."""
    extra = lambda i: () if labels is None else (labels[i:i + batch_size].to(device),)  # noqa: E731
    return torch.cat([fn(x[i:i + batch_size].to(device), *extra(i)).float().cpu()
                      for i in range(0, len(x), batch_size)])


def penultimate_features(encoder: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """x -> the input of ``encoder``'s last linear layer, flattened (in eval mode, no gradients); None when
    the encoder has no linear layer."""
    from gan_lightning.models.base import eval_mode

    linear = [m for m in encoder.modules() if isinstance(m, nn.Linear)]
    if not linear:
        return None

    def features(x: torch.Tensor) -> torch.Tensor:
        seen = []
        handle = linear[-1].register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
        try:
            with eval_mode(encoder):
                encoder(x)
        finally:
            handle.remove()
        return seen[-1].flatten(1)

    return features


LABELS = {"": "E(x)", "_penultimate": "penultimate layer", "_pixels": "pixels"}  # the bars' names of the feature sets


def probe_scores(encode: Callable, reconstruct: Callable, train: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], device: torch.device, pixels: bool = True,
                 linear: bool = True, penultimate: Callable | None = None, paired: bool = True,
                 bar: Callable[..., Any] | None = None) -> dict[str, float]:
    """Probe accuracies of ``encode`` (images in [-1, 1] -> features), of ``penultimate`` (the encoder's
    penultimate layer, when given: ``*_penultimate``) and of raw pixels, and the test MSE of
    ``reconstruct(images, labels)``.

    With ``pixels`` and ``paired``, each feature set's 1-NN classifier is also compared with the pixels' on the
    same test images (``paired_comparison``): ``probe_1nn{,_penultimate}_vs_pixels_p`` is McNemar's exact two-sided
    p-value and ``..._discordant`` the number of test images on which the two disagree in being right.

    ``train`` and ``test`` are (images in [-1, 1], labels) on the CPU. ``bar``: a progress-bar factory (tqdm's
    signature; none by default): one bar for the 1-NN probes (the features of both sets included) and the
    reconstructions, one for the linear probes (the slow part: a logistic regression per feature set).
    """
    from gan_lightning.metrics.image_scores import NoBar

    bar = bar or NoBar
    (x_train, y_train), (x_test, y_test) = train, test
    scores, correct, sets = {}, {}, {}
    named = [(suffix, features) for suffix, features in (("", encode), ("_penultimate", penultimate))
             if features is not None]
    with bar(total=len(named) + pixels + 1, desc=f"probes: 1-NN ({len(x_train):,} training vs {len(x_test):,} test "
             "images) and reconstruction", unit="steps") as progress:
        for suffix, features in named:
            progress.set_postfix_str(LABELS[suffix])
            sets[suffix] = batched(features, x_train, device), batched(features, x_test, device)
            correct[suffix] = one_nn_predictions(sets[suffix][0], y_train, sets[suffix][1]) == y_test
            scores[f"probe_1nn{suffix}"] = fraction(correct[suffix])
            progress.update()
        if pixels:
            progress.set_postfix_str("pixels")
            sets["_pixels"] = x_train, x_test
            pixels_correct = one_nn_predictions(x_train, y_train, x_test) == y_test
            scores["probe_1nn_pixels"] = fraction(pixels_correct)
            progress.update()
        progress.set_postfix_str("reconstruction MSE")
        # Labels reach reconstruct for models that decode with them (the supervised AAE); the others ignore them.
        x_hat = batched(reconstruct, x_test, device, labels=y_test)
        scores["reconstruction_mse"] = float(((x_hat - x_test.float()) ** 2).mean())
        progress.update()
    if linear:
        with bar(total=len(sets), desc=f"probes: linear (logistic regression on {len(x_train):,} training images)",
                 unit="feature sets") as progress:
            for suffix, (f_train, f_test) in sets.items():
                progress.set_postfix_str(f"{LABELS[suffix]}, {f_train.flatten(1).shape[1]} features")
                scores[f"probe_linear{suffix}"] = linear_probe_accuracy(f_train, y_train, f_test, y_test)
                progress.update()
    if pixels:
        for suffix, features_correct in correct.items() if paired else ():
            test = paired_comparison(features_correct, pixels_correct)
            scores[f"probe_1nn{suffix}_vs_pixels_p"] = test["p_value"]
            scores[f"probe_1nn{suffix}_vs_pixels_discordant"] = float(test["a_only"] + test["b_only"])
    order = [f"probe_{kind}{suffix}" for suffix in ("", "_penultimate", "_pixels") for kind in ("1nn", "linear")]
    mse = scores.pop("reconstruction_mse")  # each set's 1-NN, then its linear, the paired tests, the MSE last
    return {**{key: scores[key] for key in order if key in scores}, **scores, "reconstruction_mse": mse}
