"""Two processes on CPU (gloo) with PlayerDDPStrategy: one all-reduce per player step, ranks identical,
equal to one process on the concatenated batch, and an exact resume under DDP."""
import os
import signal

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from gan_lightning.callbacks import Preemption
from gan_lightning.distributed import CommunicationCounter, PlayerDDPStrategy
from gan_lightning.models import VAE
from tests.helpers import assert_same_training_state, digits, tiny_ali, tiny_bigan, tiny_gan, tiny_trainer


@pytest.fixture(autouse=True)
def single_threaded_forks():
    """The ranks are forked from the test process. With OMP_NUM_THREADS=2 exported, the forked ranks hung here
    (600 s timeouts) unless the parent runs one intra-op thread while it forks them; two ranks on two cores need
    no more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RecordPerRank(L.Callback):
    """Each rank writes its first batch and noise, its final parameters, optimizer states and bytes sent."""

    def __init__(self, out, counter=None):
        self.out, self.counter, self.first = out, counter, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.first is None:  # the noise of the iteration that just ran
            pl_module.seed_iteration(pl_module.iteration - 1)
            self.first = {"x": batch[0].clone(), "z": pl_module.draw_training_prior(4)}

    def on_train_end(self, trainer, pl_module):
        params = {k: v.detach().clone() for k, v in pl_module.named_parameters()}
        buffers = {k: v.detach().clone() for k, v in pl_module.named_buffers()}
        optim = [opt.state_dict() for opt in trainer.optimizers]
        sent = (self.counter.bytes, self.counter.calls) if self.counter else (0, 0)
        torch.save({**self.first, "params": params, "buffers": buffers, "optim": optim, "bytes": sent[0], "calls": sent[1],
                    "iteration": pl_module.iteration}, self.out / f"rank{trainer.global_rank}.pt")


def without_batch_norm(model):
    """Batch norm normalises each rank's batch by its own statistics (SyncBatchNorm needs GPUs), so the
    one-process equivalence holds for networks without it."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm1d):
                setattr(module, name, nn.Identity())
    return model


def player_ddp(**kwargs):
    return PlayerDDPStrategy(start_method="fork", process_group_backend="gloo", **kwargs)


def assert_same_state(a, b, atol=0.0):
    assert_same_training_state(a["params"], b["params"], a["optim"], b["optim"], atol=atol)


@pytest.mark.ddp
@pytest.mark.parametrize("on_device", [False, True])
def test_two_ranks_train_on_different_data_and_noise_and_stay_identical(tmp_path, on_device):
    trainer = tiny_trainer(tmp_path, devices=2, strategy=player_ddp(), limit_train_batches=4,
                           callbacks=[RecordPerRank(tmp_path)])
    torch.manual_seed(0)
    trainer.fit(tiny_bigan(seed=3), digits(batch_size=16, on_device=on_device))
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert not torch.equal(r0["x"], r1["x"]), "both ranks trained on the same batch"
    assert not torch.equal(r0["z"], r1["z"]), "both ranks drew the same noise"
    assert_same_state(r0, r1)
    torch.manual_seed(0)
    initial = tiny_bigan(seed=3).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in r0["params"].items()), "nothing trained"


MODELS = {
    "bigan": lambda: tiny_bigan(seed=3),
    "ali_gaussian_encoder": lambda: tiny_ali(seed=3, encoder="gaussian", dropout=0.0),  # dropout: per-rank RNG
    "ali_su_full": lambda: tiny_ali(seed=3, encoder="gaussian", dropout=0.0, loss="su_full"),  # E used twice
    "gan_r1": lambda: tiny_gan(seed=3, r1_penalty=1.0),
    "wgan_gp_n_critic_2": lambda: tiny_gan(seed=3, loss="wasserstein", gradient_penalty=10.0, n_critic=2),
    "vae": lambda: VAE(data_shape=(1, 8, 8), latent_dim=4, width=32, seed=3),
}


def one_process_and_two_ranks(tmp_path, build, data=None, batches: int = 5):
    """Fit ``build()`` (batch norm removed) on one process with batches of 32 and on two ranks with 16 each,
    counting the bytes the ranks all-reduce: (model, one process's record, rank 0's, rank 1's)."""
    counter = CommunicationCounter()
    data = data or (lambda batch_size: digits(batch_size=batch_size, on_device=True))

    def run(out, devices, batch_size, strategy, counter=None):
        out.mkdir()
        torch.manual_seed(0)
        model = without_batch_norm(build())
        trainer = tiny_trainer(out, devices=devices, strategy=strategy, limit_train_batches=batches,
                               callbacks=[RecordPerRank(out, counter)])
        trainer.fit(model, data(batch_size))
        return model

    model = run(tmp_path / "one", 1, 32, "auto")
    run(tmp_path / "two", 2, 16, player_ddp(ddp_comm_hook=counter.hook), counter)
    return (model, *(torch.load(tmp_path / path) for path in ("one/rank0.pt", "two/rank0.pt", "two/rank1.pt")))


@pytest.mark.ddp
@pytest.mark.parametrize("name", MODELS)
def test_two_ranks_equal_one_process_on_the_concatenated_batch_and_send_each_player_once(tmp_path, name):
    model, one, r0, r1 = one_process_and_two_ranks(tmp_path, MODELS[name])
    assert_same_state(r0, r1)
    assert_same_state(r0, one, atol=1e-6)

    # Bytes all-reduced = the gradients of exactly the networks each step updated, each once.
    size = {net: sum(p.numel() * p.element_size() for p in model.get_submodule(net).parameters())
            for net in model.player_networks()}
    iterations = r0["iteration"]
    d_steps = iterations if "discriminator" in size else 0  # the VAE: one player, every iteration
    g_steps = sum(1 for it in range(iterations) if (it + 1) % model.n_critic == 0)
    updated = d_steps * size.get("discriminator", 0) + g_steps * sum(v for k, v in size.items() if k != "discriminator")
    assert r0["bytes"] == updated  # Lightning's default DDP sends about twice this (benchmarks/ddp_communication.py)


@pytest.mark.ddp
def test_lightnings_default_ddp_sends_every_gradient_at_every_step(tmp_path):
    """The baseline the strategy improves on, measured the same way."""
    counter = CommunicationCounter()

    class Hook(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            trainer.strategy.model.register_comm_hook(None, counter.hook)

    strategy = DDPStrategy(start_method="fork", process_group_backend="gloo", find_unused_parameters=True)
    trainer = tiny_trainer(tmp_path, devices=2, strategy=strategy, limit_train_batches=3,
                           callbacks=[Hook(), RecordPerRank(tmp_path, counter)])
    model = tiny_bigan(seed=3)
    trainer.fit(model, digits(batch_size=16))
    r0 = torch.load(tmp_path / "rank0.pt")
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    assert r0["bytes"] == 2 * r0["iteration"] * total  # two backward passes, each all-reducing everything


class SignalRankAt(L.Callback):
    """Rank ``rank`` alone receives SIGUSR1 at the end of iteration ``iteration``."""

    def __init__(self, rank, iteration):
        self.rank, self.iteration = rank, iteration

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank == self.rank and pl_module.iteration == self.iteration:
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.ddp
def test_a_signal_to_one_rank_stops_all_ranks_at_the_same_iteration_and_resumes_exactly(tmp_path):
    def run(root, *callbacks, ckpt_path=None):
        root.mkdir(exist_ok=True)
        checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0)
        trainer = tiny_trainer(root, devices=2, strategy=player_ddp(), max_epochs=2, limit_train_batches=5,
                               enable_checkpointing=True, callbacks=[*callbacks, checkpoint, RecordPerRank(root)])
        torch.manual_seed(0)
        trainer.fit(tiny_ali(seed=3, encoder="gaussian", dropout=0.3, ema_decay=0.9),
                    digits(batch_size=16, on_device=True), ckpt_path=ckpt_path)

    run(tmp_path / "whole")
    with pytest.raises(Exception, match="Preempted|SIGUSR1"):
        run(tmp_path / "split", SignalRankAt(rank=1, iteration=3), Preemption(requeue=False))
    saved = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["gan_lightning"]["iteration"] == 3
    run(tmp_path / "split", Preemption(requeue=False), ckpt_path="last")
    for rank in (0, 1):
        whole, split = (torch.load(tmp_path / run / f"rank{rank}.pt") for run in ("whole", "split"))
        assert split["iteration"] == whole["iteration"] == 10
        assert_same_state(split, whole)
    # Batch-norm statistics are each rank's own (not broadcast at every forward); rank 0's are the saved ones.
    whole, split = (torch.load(tmp_path / run / "rank0.pt") for run in ("whole", "split"))
    for name, value in whole["buffers"].items():
        assert torch.equal(value, split["buffers"][name]), f"{name} differs on rank 0"


@pytest.mark.ddp
def test_gradient_accumulation_all_reduces_once_per_step_under_block_backward_sync(tmp_path):
    """Two micro-batches per discriminator step: the first backward inside Lightning's
    ``strategy.block_backward_sync()`` sends nothing, the second sends D's accumulated gradients once."""
    import contextlib

    from gan_lightning.losses import gan_discriminator_loss
    from gan_lightning.models import GAN

    class AccumulatingCritic(GAN):
        def update_players(self, batch):
            opt_d = self.optimizer("discriminator")
            with self.toggled_optimizer(opt_d):
                opt_d.zero_grad()
                for i, x in enumerate(batch[0].chunk(2)):
                    sync = self.trainer.strategy.block_backward_sync() if i == 0 else contextlib.nullcontext()
                    with sync:
                        x_fake = self.generator(self.draw_training_prior(len(x))).detach()
                        loss = gan_discriminator_loss(self.discriminator(x), self.discriminator(x_fake), self.loss)
                        self.manual_backward(loss / 2)
                opt_d.step()
            return {}

    counter = CommunicationCounter()
    torch.manual_seed(0)
    model = AccumulatingCritic(data_shape=(1, 8, 8), latent_dim=4, architecture="mlp", width=32)
    trainer = tiny_trainer(tmp_path, devices=2, strategy=player_ddp(ddp_comm_hook=counter.hook), limit_train_batches=3,
                           callbacks=[RecordPerRank(tmp_path, counter)])
    trainer.fit(model, digits(batch_size=16))
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert_same_state(r0, r1)
    d_bytes = sum(p.numel() * p.element_size() for p in model.discriminator.parameters())
    assert r0["bytes"] == r0["iteration"] * d_bytes


@pytest.mark.ddp
def test_lightnings_one_ddp_per_module_is_refused_with_the_fix(tmp_path):
    strategy = DDPStrategy(start_method="fork", process_group_backend="gloo")
    with pytest.raises(Exception, match="set trainer.strategy to player_ddp"):
        tiny_trainer(tmp_path, devices=2, strategy=strategy).fit(tiny_bigan(), digits())
