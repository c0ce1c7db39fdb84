"""What a training iteration costs the host, asserted as causes (counts of calls), never as seconds.

benchmarks/host_overhead.py measures the seconds (docs/performance.md). Each test here names one cost that
was removed and fails if it comes back: seeding every backend per iteration, Lightning's backward and step
wrappers, a host read per player step on an accelerator path, Lightning's per-batch work per iteration.
"""
import collections

import lightning as L
import pytest
import torch
from lightning.pytorch.strategies import Strategy

import gan_lightning.models.base as base
from gan_lightning.checkpoints import CheckpointError
from gan_lightning.models.base import AdversarialModule
from tests.helpers import assert_same_training_state, digits, tiny_bigan, tiny_trainer


class Counting(L.Callback):
    """Counts the calls of chosen functions made inside training batches, and the batches and hooks."""

    def __init__(self):
        self.inside = False
        self.calls = collections.Counter()

    def wrap(self, name: str, fn):
        def counted(*args, **kwargs):
            if self.inside:
                self.calls[name] += 1
            return fn(*args, **kwargs)
        return counted

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.inside = True
        self.calls["batches"] += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.inside = False

    def on_before_backward(self, trainer, pl_module, loss):
        self.calls["on_before_backward"] += 1

    def on_after_backward(self, trainer, pl_module):
        self.calls["on_after_backward"] += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.calls["on_before_optimizer_step"] += 1


def test_an_iteration_seeds_only_the_generators_it_draws_from(tmp_path, monkeypatch):
    """torch.manual_seed seeds every backend; on a torch built with CUDA and run without a GPU each CUDA, XPU and
    MTIA seeding is queued with a formatted stack trace, 0.2 to 0.5 ms an iteration. Iterations seed the CPU's
    generator (and their own device's) only; their randomness is still derived from (seed, iteration, rank)."""
    spy = Counting()
    monkeypatch.setattr(torch, "manual_seed", spy.wrap("torch.manual_seed", torch.manual_seed))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", spy.wrap("cuda.manual_seed_all", torch.cuda.manual_seed_all))
    model = tiny_bigan(dropout=0.2)
    tiny_trainer(tmp_path, callbacks=[spy], limit_train_batches=4).fit(model, digits())
    assert spy.calls["batches"] == 4
    assert spy.calls["torch.manual_seed"] == 0 and spy.calls["cuda.manual_seed_all"] == 0

    # The same iteration draws the same dropout masks and noise as before: (seed, iteration, rank) still decide.
    model.seed_iteration(3)
    first = (torch.rand(5), torch.rand(5, generator=model.noise))
    torch.manual_seed(123)
    model.seed_iteration(3)
    second = (torch.rand(5), torch.rand(5, generator=model.noise))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_player_steps_bypass_lightnings_wrappers_and_still_call_every_hook(tmp_path, monkeypatch):
    """On one device in 32-bit or bf16 precision, Lightning's strategy and precision layers only pass backward and
    step on (about 0.1 ms a step): the models call them directly, with Lightning's hooks and step count intact."""
    spy = Counting()
    monkeypatch.setattr(Strategy, "backward", spy.wrap("Strategy.backward", Strategy.backward))
    monkeypatch.setattr(Strategy, "optimizer_step", spy.wrap("Strategy.optimizer_step", Strategy.optimizer_step))
    trainer = tiny_trainer(tmp_path, callbacks=[spy], limit_train_batches=3)
    trainer.fit(tiny_bigan(update="alternating"), digits())
    assert spy.calls["Strategy.backward"] == 0 and spy.calls["Strategy.optimizer_step"] == 0
    steps = 2 * 3  # two players, three iterations
    assert trainer.global_step == 3  # a step is an iteration (AdversarialModule.count_iterations)
    hooks = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
    assert [spy.calls[h] for h in hooks] == [steps] * 3


def fit_bigan(tmp_path, **trainer_kwargs) -> tuple[AdversarialModule, L.Trainer]:
    torch.manual_seed(0)
    model = tiny_bigan(dropout=0.2, ema_decay=0.9, gradient_clip_val=0.05)  # every per-step path: clip, EMA, dropout
    trainer = tiny_trainer(tmp_path, limit_train_batches=5, **trainer_kwargs)
    trainer.fit(model, digits())
    return model, trainer


def test_direct_steps_train_exactly_as_lightnings_own_path(tmp_path, monkeypatch):
    direct, trainer_a = fit_bigan(tmp_path / "direct")
    monkeypatch.setattr(base, "direct_steps", lambda module, base: None)  # every call through Lightning's wrappers
    wrapped, trainer_b = fit_bigan(tmp_path / "wrapped")
    assert direct.iteration == wrapped.iteration == 5 and trainer_a.global_step == trainer_b.global_step == 5
    assert_same_training_state(direct.state_dict(), wrapped.state_dict(),
                               [o.state_dict() for o in trainer_a.optimizers],
                               [o.state_dict() for o in trainer_b.optimizers])


def test_a_steady_state_iteration_reads_nothing_back_from_the_device_on_an_accelerator_path(tmp_path, monkeypatch):
    """On an accelerator every read of a tensor's value on the host waits for the device. With the accelerator
    path's deferred non-finite checks (forced here on the CPU), iterations between two log steps read none:
    no .item(), bool(), float(), int() or .tolist() of a tensor."""
    monkeypatch.setattr(AdversarialModule, "defer_nonfinite_checks", True)
    spy = Counting()
    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, spy.wrap(name, getattr(torch.Tensor, name)))
    fused = lambda params: torch.optim.Adam(params, fused=True)  # noqa: E731  (the configs' Adam; torch's default
    # Adam reads its step count with .item(), from a CPU tensor even on an accelerator: no wait there)
    model = tiny_bigan(ema_decay=0.9, n_critic=2, optimizer_d=fused, optimizer_ge=fused)
    tiny_trainer(tmp_path, callbacks=[spy], limit_train_batches=6, log_every_n_steps=100).fit(model, digits())
    assert spy.calls["batches"] == 6
    assert {k: v for k, v in spy.calls.items() if k in ("item", "__bool__", "__float__", "__int__", "tolist")} == {}


def grouped_run(tmp_path, k: int, callbacks=(), ckpt_path=None, limit_train_batches=1.0):
    torch.manual_seed(0)
    model = tiny_bigan(dropout=0.2)
    trainer = tiny_trainer(tmp_path, callbacks=list(callbacks), limit_train_batches=limit_train_batches)
    trainer.fit(model, digits(on_device=True, iterations_per_batch=k), ckpt_path=ckpt_path)
    return model, trainer


def test_iterations_per_batch_trains_the_same_iterations_with_lightnings_batch_work_once_per_group(tmp_path):
    """data.iterations_per_batch k serves k batches to Lightning as one: the model trains on each in turn, exactly
    as with 1, and Lightning's per-batch work (hooks, logging, progress) runs once per k iterations."""
    runs = {}
    for k in (1, 3):
        spy = Counting()
        model, trainer = grouped_run(tmp_path / str(k), k, callbacks=[spy])
        runs[k] = (model, trainer, spy.calls["batches"])
    (one, trainer_one, batches_one), (three, trainer_three, batches_three) = runs[1], runs[3]
    assert one.iteration == three.iteration == batches_one > 60  # a whole epoch of 16-example batches
    assert one.images_seen == three.images_seen
    assert batches_three == -(-batches_one // 3)  # the epoch's last group holds the remainder
    assert trainer_one.global_step == trainer_three.global_step
    assert_same_training_state(one.state_dict(), three.state_dict(),
                               [o.state_dict() for o in trainer_one.optimizers],
                               [o.state_dict() for o in trainer_three.optimizers])


class SaveAt(L.Callback):
    """Writes a checkpoint after Lightning's batch ``batch_idx`` (a mid-epoch position, as a preemption would)."""

    def __init__(self, batch_idx: int, path):
        self.batch_idx, self.path = batch_idx, path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.batch_idx:
            trainer.save_checkpoint(self.path)


class StartsAt(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if not hasattr(self, "first"):
            self.first = (pl_module.iteration, batch_idx)


def test_a_run_of_grouped_iterations_resumes_mid_epoch_exactly_and_refuses_another_grouping(tmp_path):
    path = tmp_path / "mid.ckpt"
    whole, _ = grouped_run(tmp_path / "whole", 3, callbacks=[SaveAt(4, path)])  # after 5 groups: 15 iterations
    start = StartsAt()
    resumed, trainer = grouped_run(tmp_path / "resumed", 3, callbacks=[start], ckpt_path=path)
    assert start.first == (15, 5)  # where the resumed run started: the 16th iteration, Lightning's 6th batch
    assert resumed.iteration == whole.iteration
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key

    with pytest.raises(CheckpointError, match="data.iterations_per_batch 3, and this run has 2.*Resume with "
                                              "data.iterations_per_batch 3"):
        grouped_run(tmp_path / "other", 2, ckpt_path=path)


def test_iterations_per_batch_needs_the_data_in_device_memory():
    with pytest.raises(ValueError, match="data.iterations_per_batch=4 groups batches of the data held in device "
                                         "memory: set data.on_device true"):
        digits(iterations_per_batch=4)


def test_cached_toggling_keeps_what_the_user_froze_frozen_through_every_player_step(tmp_path):
    """The models keep each optimizer's parameter list per fit (Lightning's toggle_optimizer rebuilds it and hashes
    every parameter at each step); a parameter frozen by the user stays frozen and untouched, the others train."""
    torch.manual_seed(0)
    model = tiny_bigan(update="alternating")
    frozen = next(model.encoder.parameters())
    frozen.requires_grad_(False)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = tiny_trainer(tmp_path, limit_train_batches=3)
    trainer.fit(model, digits())
    assert not frozen.requires_grad and torch.equal(frozen, before["encoder." + next(iter(
        dict(model.encoder.named_parameters())))])
    assert all(p.requires_grad for p in model.parameters() if p is not frozen)
    moved = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert len(moved) == len(before) - 1


@pytest.mark.skipif(not torch.cuda._is_compiled() or torch.cuda.is_initialized(),
                    reason="torch counts CUDA devices per step only when built for CUDA and not yet initialised")
def test_optimizer_steps_do_not_count_the_cuda_devices_again(tmp_path, monkeypatch):
    """``import lightning`` makes torch count CUDA devices through NVML, uncached until CUDA is initialised, and
    Adam asks at every step: about 150 µs a step on a CPU run. A fit counts them once (device_count.py); after
    it, torch counts as before."""
    spy = Counting()
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.setattr(torch.cuda, "_cached_device_count", None)
    monkeypatch.setattr(torch.cuda, "_device_count_nvml", spy.wrap("nvml", torch.cuda._device_count_nvml))
    trainer = tiny_trainer(tmp_path, callbacks=[spy], limit_train_batches=3)
    trainer.fit(tiny_bigan(update="alternating"), digits())
    assert trainer.global_step == spy.calls["batches"] == 3  # two Adam steps an iteration
    assert spy.calls["nvml"] == 0
    assert torch.cuda._cached_device_count is None  # released: outside a fit, torch counts again
    spy.inside = True
    torch.optim.Adam([torch.zeros(1, requires_grad=True)]).step()
    assert spy.calls["nvml"] == 1

    # A fit that died by exception left its hold behind: the next fit takes it over and releases it.
    from gan_lightning.models.device_count import hold_cuda_device_count

    hold_cuda_device_count()
    assert torch.cuda._cached_device_count is not None and spy.calls["nvml"] == 2
    tiny_trainer(tmp_path, limit_train_batches=1).fit(tiny_bigan(update="alternating"), digits())
    assert torch.cuda._cached_device_count is None and spy.calls["nvml"] == 3


@pytest.mark.parametrize("deferred, checks_per_iteration", [(False, 1), (True, 2)])
def test_players_stepping_together_are_checked_in_one_kernel_when_the_check_is_read_at_once(
        tmp_path, monkeypatch, deferred, checks_per_iteration):
    """A simultaneous update's players share one non-finite check where it is read at once (the CPU); where the
    flags stay on the device (an accelerator), each player keeps its own flag and nothing is checked twice."""
    spy = Counting()
    check = torch._amp_foreach_non_finite_check_and_unscale_
    monkeypatch.setattr(torch, "_amp_foreach_non_finite_check_and_unscale_", spy.wrap("check", check))
    monkeypatch.setattr(AdversarialModule, "defer_nonfinite_checks", deferred)
    tiny_trainer(tmp_path, callbacks=[spy], limit_train_batches=3).fit(tiny_bigan(update="simultaneous"), digits())
    assert spy.calls["batches"] == 3 and spy.calls["check"] == 3 * checks_per_iteration
