"""Learning-rate schedules: BiGAN's constant-then-decay, by epoch and through a config."""
import pytest
import torch

from gan_lightning.schedules import ConstantThenDecay


def rates(scheduler, optimizer, epochs):
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_constant_then_exponential_decay_follows_the_official_bigan_schedule():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    lr = rates(ConstantThenDecay(optimizer, constant_epochs=3, decay_epochs=4, final_factor=0.01), optimizer, 9)
    assert lr[:3] == [2e-4] * 3
    # official set_lr: exp(log lr + p (log final - log lr)), p = (epoch - niter + 1) / niter_decay
    assert lr[3:7] == pytest.approx([2e-4 * 0.01 ** (k / 4) for k in (1, 2, 3, 4)])
    assert lr[6] == pytest.approx(2e-6) and lr[7:] == pytest.approx([2e-6, 2e-6])  # stays at the final rate


def test_linear_decay_reaches_the_final_factor_and_resumes_from_its_state():
    def make():
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        return ConstantThenDecay(optimizer, constant_epochs=1, decay_epochs=4, final_factor=0.0, decay="linear")

    full = make()
    assert rates(full, full.optimizer, 6) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    first = make()
    rates(first, first.optimizer, 2)  # two epochs, then a checkpoint
    resumed = make()
    resumed.optimizer.load_state_dict(first.optimizer.state_dict())
    resumed.load_state_dict(first.state_dict())
    assert rates(resumed, resumed.optimizer, 3) == pytest.approx([0.5, 0.25, 0.0])


@pytest.mark.parametrize("kwargs, culprit", [({"decay_epochs": 0}, "decay_epochs"),
                                             ({"final_factor": 0.0}, "final_factor"),
                                             ({"final_factor": 1.5}, "final_factor"), ({"decay": "cosine"}, "decay")])
def test_bad_settings_are_refused_by_name(kwargs, culprit):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=culprit):
        ConstantThenDecay(optimizer, **kwargs)


def test_the_bigan_config_decays_both_players_over_its_second_200_epochs(monkeypatch):
    from tests.test_cli import _cli

    model = _cli(["--config", "configs/bigan.yaml"], monkeypatch).model
    optimizers, schedulers = model.configure_optimizers()
    assert len(schedulers) == len(optimizers) == 2 and all(s["interval"] == "epoch" for s in schedulers)
    for entry in schedulers:
        factor = entry["scheduler"].factor
        assert factor(0) == factor(199) == 1.0 and factor(200) < 1.0
        assert factor(399) == pytest.approx(0.01) and factor(500) == pytest.approx(0.01)
