"""EncoderProbe's ``val/probe_*`` are scored on the validation split: choosing a checkpoint by them never reads the
test set. The papers' protocol (test images) stays available under names that say so (``test/probe_*``)."""
import pytest

from gan_lightning.callbacks import EncoderProbe
from gan_lightning.callbacks.probes import model_probe_scores
from gan_lightning.errors import ConfigError
from tests.helpers import digits, tiny_bigan, tiny_trainer


class CountedSplits(dict):
    """The data module's splits, counting each read by name."""

    def __init__(self, splits):
        super().__init__(splits)
        self.reads = {name: 0 for name in splits}

    def __getitem__(self, name):
        self.reads[name] += 1
        return super().__getitem__(name)


@pytest.mark.parametrize("split", ["val", "test"])
def test_encoder_probe_scores_and_names_the_split_it_reads_and_no_other(tmp_path, split):
    data = digits()
    data.setup("fit")
    data.splits = CountedSplits(data.splits)
    probe = EncoderProbe(n_train=300, n_test=100, linear=False, penultimate=False, split=split)
    model = tiny_bigan(seed=0)
    tiny_trainer(tmp_path, limit_train_batches=2, limit_val_batches=1, callbacks=[probe]).fit(model, data)
    assert (data.splits.reads["test"] > 0) == (split == "test")  # validation reads the val split anyway
    logged = {k for k in model.trainer.logged_metrics if "probe" in k}
    assert logged == {f"{split}/probe_1nn", f"{split}/probe_1nn_pixels"}
    direct = model_probe_scores(model, data, 300, 100, linear=False, penultimate=False, split=split)
    assert float(model.trainer.logged_metrics[f"{split}/probe_1nn"]) == pytest.approx(direct["probe_1nn"])


def test_encoder_probe_refuses_a_split_that_is_not_held_out():
    with pytest.raises(ConfigError, match="'val' or 'test'"):
        EncoderProbe(split="train")
