"""Two processes on CPU (gloo): ranks see different data and noise, and end with identical parameters."""
import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from tests.helpers import digits, tiny_bigan, tiny_trainer


class RecordPerRank(L.Callback):
    """Each rank writes its first batch, its first noise draw and its final parameters to a file."""

    def __init__(self, out):
        self.out, self.first = out, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.first is None:  # re-seed as this iteration did (the noise is re-seeded every iteration anyway)
            pl_module.on_train_batch_start(batch, batch_idx)
            self.first = {"x": batch[0].clone(), "z": pl_module.draw_prior(4, pl_module.noise)}

    def on_train_end(self, trainer, pl_module):
        params = {k: v.detach().clone() for k, v in pl_module.named_parameters()}
        optim = [opt.state_dict() for opt in trainer.optimizers]
        torch.save({**self.first, "params": params, "optim": optim}, self.out / f"rank{trainer.global_rank}.pt")


@pytest.mark.ddp
@pytest.mark.parametrize("on_device", [False, True])
def test_two_ranks_train_on_different_data_and_noise_and_stay_identical(tmp_path, on_device):
    strategy = DDPStrategy(start_method="fork", process_group_backend="gloo", find_unused_parameters=True)
    trainer = tiny_trainer(tmp_path, devices=2, strategy=strategy, limit_train_batches=4,
                           callbacks=[RecordPerRank(tmp_path)])
    trainer.fit(tiny_bigan(seed=3), digits(batch_size=16, on_device=on_device))
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert not torch.equal(r0["x"], r1["x"]), "both ranks trained on the same batch"
    assert not torch.equal(r0["z"], r1["z"]), "both ranks drew the same noise"
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), f"{name} differs between ranks"
    for opt0, opt1 in zip(r0["optim"], r1["optim"]):
        for idx, state in opt0["state"].items():
            for key, value in state.items():
                assert torch.equal(value, opt1["state"][idx][key])
    initial = tiny_bigan(seed=3).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in r0["params"].items()), "nothing trained"
