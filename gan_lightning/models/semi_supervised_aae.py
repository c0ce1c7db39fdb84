"""AAEs with a categorical code (Makhzani et al. 2016, arXiv 1511.05644, Sec. 6-8).

The encoder infers a categorical y ~ q(y|x) and a style z ~ q(z|x); two latent discriminators match them to
Cat(1/K) and N(0, s^2 I) (s: prior_std), and the labelled examples (if any) train q(y|x) as a classifier:

    ||x - G(y, z)||^2  +  GAN_{D_y}(Cat(1/K), q(y|x))  +  GAN_{D_z}(N(0, s^2 I), q(z|x))  -  E_labelled log q(y|x)

each term a phase with its own optimizer, in that order: reconstruction (E, G), regularisation (D_y and D_z,
then E fooling both), and, with labels only, classification (E).

``SemiSupervisedAAE`` is the semi-supervised classifier (Sec. 6, Figure 8); ``ClusteringAAE`` (Sec. 7) is the
same model without labels, y taking K clusters; ``cluster_heads`` (Sec. 8, Figure 11) maps y to a
low-dimensional representation W y + z with a cost on cluster heads closer than a margin.
"""
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from gan_lightning.distributed import GLOBAL_VALUE
from gan_lightning.errors import ConfigError
from gan_lightning.losses import Reconstruction, discriminator_loss, fooling_loss, reconstruction_error
from gan_lightning.metrics.clustering import ConfidentLabels, LabelContingency, labelled_cluster_accuracy
from gan_lightning.models.aae import ADVERSARIAL_OPTIMIZER, RECONSTRUCTION_OPTIMIZER, check_adversarial_options
from gan_lightning.models.base import AdversarialModule, eval_mode
from gan_lightning.nets import ARCHITECTURES, ArchitectureName, LatentDiscriminator


class SemiSupervisedAAE(AdversarialModule):
    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        n_classes: int = 10,
        latent_dim: int = 10,
        architecture: ArchitectureName = "mlp",
        width: int = 1000,
        prior_std: float = 1.0,
        supervised: bool = True,
        labelled_batch_size: int | None = None,
        cluster_heads: bool = False,
        head_margin: float = 3.0,
        reconstruction: Reconstruction = "mse",
        discriminator_width: int = 1000,
        input_noise: float = 0.0,
        optimizer_ae: OptimizerCallable | None = None,
        optimizer_d: OptimizerCallable | None = None,
        optimizer_e: OptimizerCallable | None = None,
        optimizer_c: OptimizerCallable | None = None,
        scheduler_ae: LRSchedulerCallable | None = None,
        scheduler_d: LRSchedulerCallable | None = None,
        scheduler_e: LRSchedulerCallable | None = None,
        scheduler_c: LRSchedulerCallable | None = None,
        **kwargs,
    ):
        """The semi-supervised AAE: q(y|x) categorical, q(z|x) style, two latent discriminators.

        Phases per iteration: reconstruction (E, G) from (y, z); regularisation of D_y (one-hot samples of
        Cat(1/K) against q(y|x)) and D_z (N(0, prior_std^2 I) against q(z|x)); the encoder fooling both; and,
        when ``supervised``, the classification phase: cross-entropy of q(y|x) on a batch of the data
        module's labelled subset (``data.n_labelled``). Logs the classification error (``val/error``,
        ``test/error``) or, without labels, the cluster errors (see ``ClusteringAAE``).

        Args:
            data_shape: shape of one example; linked from the data module by the CLI.
            n_classes: categories of y: the labels (semi-supervised) or the clusters K (clustering).
            latent_dim: dimension of the style z (paper: 10 for MNIST; the representation's dimension n
                with cluster heads).
            architecture: network family of E and G (see ALI); D_y and D_z are MLPs.
            width: hidden units (mlp) or channels (dcgan) of E and G (paper: 1000).
            prior_std: standard deviation of the style prior.
            supervised: run the classification phase (False: unsupervised clustering).
            labelled_batch_size: labelled examples per classification phase (default: the training batch size).
            cluster_heads: dimensionality reduction: G decodes W y + z, W a learned (K, latent_dim) matrix of
                cluster heads, and the reconstruction phase adds sum_{i<j} max(0, head_margin - ||w_i - w_j||).
            head_margin: eta, the distance below which two cluster heads are penalised.
            reconstruction: ``mse`` or ``bernoulli`` (see AAE).
            discriminator_width: hidden units of D_y's and D_z's two layers.
            input_noise: standard deviation of Gaussian noise added to the encoder's input in training, in
                every phase (one draw per iteration for phases 1-3, one for the labelled batch); the
                reconstruction target stays the clean x, so phase 1 is a denoising autoencoder. 0: off.
            optimizer_ae: optimizer of the reconstruction phase (E, G, cluster heads; default Adam 1e-3).
            optimizer_d: optimizer of D_y and D_z (default: Adam 1e-4, betas (0.5, 0.999)).
            optimizer_e: optimizer of the encoder's regularisation phase (same default).
            optimizer_c: optimizer of the classification phase (default: Adam 1e-3).
            scheduler_ae: optional schedule of optimizer_ae, stepped once per epoch.
            scheduler_d: optional schedule of optimizer_d.
            scheduler_e: optional schedule of optimizer_e.
            scheduler_c: optional schedule of optimizer_c.
            **kwargs: the shared options of ``AdversarialModule`` (n_critic, ema_decay, gradient_clip_val,
                seed, on_nonfinite, compile).
        """
        super().__init__(latent_dim=latent_dim, prior="gaussian", **kwargs)
        check_adversarial_options(self, width, discriminator_width, prior_std)
        if n_classes < 2 or head_margin < 0 or input_noise < 0:
            raise ValueError(f"model.n_classes must be >= 2, model.head_margin >= 0 and model.input_noise >= 0; got "
                             f"{n_classes}, {head_margin}, {input_noise}")
        self.save_hyperparameters(ignore=["optimizer_ae", "optimizer_d", "optimizer_e", "optimizer_c", "scheduler_ae",
                                          "scheduler_d", "scheduler_e", "scheduler_c"])
        self.n_classes, self.prior_std, self.supervised = n_classes, prior_std, supervised
        self.labelled_batch_size, self.head_margin = labelled_batch_size, head_margin
        self.reconstruction, self.input_noise = reconstruction, input_noise
        nets = ARCHITECTURES[architecture]
        self.encoder = nets.encoder(n_classes + latent_dim, data_shape, width)  # (logits of q(y|x), z)
        self.generator = nets.generator(self.code_dim(cluster_heads), data_shape, width)
        self.discriminator_y = LatentDiscriminator(n_classes, discriminator_width)
        self.discriminator_z = LatentDiscriminator(latent_dim, discriminator_width)
        decoder = ["generator"]
        if cluster_heads:
            self.heads = nn.Linear(n_classes, latent_dim, bias=False)   # column k: cluster head w_k
            nn.init.normal_(self.heads.weight, std=head_margin)
            decoder.append("heads")
        # The encoder is in two players (three when supervised), each phase with its own optimizer; under
        # player_ddp it has one DDP wrapper, which every phase's step goes through.
        self.add_player("autoencoder", ["encoder", *decoder], optimizer_ae or RECONSTRUCTION_OPTIMIZER, scheduler_ae)
        self.add_player("discriminator", ["discriminator_y", "discriminator_z"], optimizer_d or ADVERSARIAL_OPTIMIZER,
                        scheduler_d)
        self.add_player("encoder", ["encoder"], optimizer_e or ADVERSARIAL_OPTIMIZER, scheduler_e)
        if supervised:
            self.add_player("classifier", ["encoder"], optimizer_c or RECONSTRUCTION_OPTIMIZER, scheduler_c)
        self.add_ema("encoder", *decoder)
        self.label_tables(n_classes)
        self._labelled: tuple[torch.Tensor, torch.Tensor] | None = None

    def label_tables(self, n_labels: int) -> None:
        """The held-out tables over ``n_labels`` labels: q(y|x)'s argmax against the label, per stage, and each
        cluster's label from its most confident validation example (the unsupervised model's)."""
        tables = {stage: LabelContingency(self.n_classes, n_labels) for stage in ("val", "test")}
        self.contingency = nn.ModuleDict(tables)
        self.cluster_labels = ConfidentLabels(self.n_classes, n_labels)
        self._clusters_labelled = False   # in the test stage: by the validation split

    def code_dim(self, cluster_heads: bool) -> int:
        return self.latent_dim if cluster_heads else self.n_classes + self.latent_dim

    # --- the pieces of the algorithm ------------------------------------------------------------

    def infer(self, x: torch.Tensor, encoder: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits of q(y|x), style z): (B, ...) -> (B, K), (B, Z)."""
        h = (encoder or self.encoder)(x)
        return h[:, : self.n_classes], h[:, self.n_classes:]

    def code(self, y: torch.Tensor, z: torch.Tensor, heads: nn.Module | None = None) -> torch.Tensor:
        """The decoder's input: (y, z), or W y + z with cluster heads."""
        if not self.hparams.cluster_heads:
            return torch.cat([y, z], dim=1)
        return (heads or self.heads)(y) + z

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """x + input_noise * eps, eps ~ N(0, I) from the training noise: the encoder's training input."""
        return x + self.input_noise * self.draw_training_normal(x.shape) if self.input_noise else x

    def head_distance_cost(self) -> torch.Tensor:
        """sum_{i<j} max(0, eta - ||w_i - w_j||): pushes cluster heads at least eta apart."""
        w = self._modules["heads"].weight.T      # (K, n); the network itself, never its DDP wrapper
        i, j = torch.triu_indices(len(w), len(w), offset=1, device=w.device)
        return F.relu(self.head_margin - (w[i] - w[j]).norm(dim=1)).sum()

    def on_fit_start(self) -> None:
        """Hold the labelled subset on the device for the classification phase."""
        if not self.supervised:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "labelled_subset"):
            raise ConfigError("SemiSupervisedAAE's classification phase draws from GANDataModule's labelled subset "
                              "(data.n_labelled); fit it with that data module, or set model.supervised false")
        x, y = datamodule.labelled_subset()
        if len(y) == 0:
            raise ConfigError("data.n_labelled is 0: the classification phase has no labels; set data.n_labelled "
                              "(e.g. 100) or model.supervised false (unsupervised clustering)")
        self._labelled = (x.to(self.device), y.to(self.device))

    def update_players(self, batch) -> dict[str, torch.Tensor]:
        x, n = batch[0], len(batch[0])
        x_in = self.corrupt(x)                                                  # the encoder's input, phases 1-3
        k = self.rank_rows(lambda m: torch.randint(self.n_classes, (m,), generator=self.noise,
                                                   device=self.noise.device), n).to(self.device)
        y_prior = F.one_hot(k, self.n_classes).float()                          # y' ~ Cat(1/K)
        z_prior = self.prior_std * self.draw_training_normal((n, self.latent_dim))   # z' ~ N(0, std^2 I)
        logs = {}

        # 1. Reconstruction: E and G (and the cluster heads) reconstruct x from (q(y|x), z).
        opt_ae = self.optimizer("autoencoder")
        with self.toggled_optimizer(opt_ae):
            logits, z = self.infer(x_in)
            rec = reconstruction_error(self.generator(self.code(logits.softmax(1), z)), x, self.reconstruction).mean()
            loss = rec + self.head_distance_cost() if self.hparams.cluster_heads else rec
            self.step(opt_ae, loss, player="autoencoder")
        logs["train/reconstruction"] = rec.detach()

        # 2. Regularisation, D_y and D_z: one-hot categorical and Gaussian samples are real, q(y|x) and z fake.
        opt_d = self.optimizer("discriminator")
        with self.toggled_optimizer(opt_d):
            with torch.no_grad():
                logits, z = self.infer(x_in)
            d_loss = (discriminator_loss(self.discriminator_y(y_prior), self.discriminator_y(logits.softmax(1)))
                      + discriminator_loss(self.discriminator_z(z_prior), self.discriminator_z(z)))
            self.step(opt_d, d_loss, player="discriminator")
        logs["train/d_loss"] = d_loss.detach()

        if self.generator_turn:
            # 3. Regularisation, E: q(y|x) passes for one-hot samples and z for Gaussian ones.
            opt_e = self.optimizer("encoder")
            with self.toggled_optimizer(opt_e):
                logits, z = self.infer(x_in)
                e_loss = fooling_loss(self.discriminator_y(logits.softmax(1))) + fooling_loss(self.discriminator_z(z))
                self.step(opt_e, e_loss, player="encoder")
            logs["train/e_loss"] = e_loss.detach()

        if self.supervised:
            # 4. Semi-supervised classification: q(y|x) minimises the cross-entropy on labelled examples.
            x_l, y_l = self._labelled
            m = self.labelled_batch_size or n
            pick = self.rank_rows(lambda m_: torch.randint(len(y_l), (m_,), generator=self.noise,
                                                           device=self.noise.device), m).to(self.device)
            opt_c = self.optimizer("classifier")
            with self.toggled_optimizer(opt_c):
                c_loss = F.cross_entropy(self.infer(self.corrupt(x_l[pick]))[0], y_l[pick])
                self.step(opt_c, c_loss, player="classifier")
            logs["train/c_loss"] = c_loss.detach()
        return logs

    def evaluate(self, x: torch.Tensor, batch_idx: int, stage: str,
                 y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """G's reconstruction error; with labels, q(y|x)'s predictions are counted for the epoch's error, and
        validation examples label the clusters."""
        if y is not None and stage in self.contingency:
            logits = self.classify(x)
            self.contingency[stage].update(logits.argmax(1), y)
            if stage == "val" and not self.supervised:
                self.cluster_labels.update(logits, y)
        return {f"{stage}/recon_mse": F.mse_loss(self.reconstruct(x), x)}

    @torch.no_grad()
    def label_clusters_on_validation(self) -> bool:
        """Fill ``cluster_labels`` from this rank's share of the data module's validation split (the ranks' shares
        meet in ``compute``); False, on every rank alike, when no rank read a labelled validation example."""
        self.cluster_labels.reset()
        datamodule, seen = getattr(self.trainer, "datamodule", None), 0
        for batch in datamodule.val_dataloader() if datamodule is not None else ():
            if len(batch) < 2:
                break
            x, y = datamodule.on_after_batch_transfer(self.transfer_batch_to_device(batch, self.device, 0), 0)[:2]
            self.cluster_labels.update(self.classify(x), y)
            seen += int((y >= 0).sum())
        # One answer for all ranks: the figure it gates is computed with a collective (a rank that skipped it
        # would hang)
        return bool(self.trainer.strategy.reduce(torch.tensor(float(seen), device=self.device), reduce_op="sum") > 0)

    def _log_classification(self, stage: str) -> None:
        table = self.contingency[stage]
        if int(table.counts.sum()) == 0 and not torch.distributed.is_initialized():
            return
        scores = table.compute()
        if self.supervised:
            self.log(f"{stage}/error", 1.0 - scores["accuracy"], **GLOBAL_VALUE)  # the ranks' tables summed
        else:
            logs = {f"{stage}/cluster_error_majority": 1.0 - scores["cluster_accuracy_majority"]}
            if stage == "val" or self._clusters_labelled:
                accuracy = labelled_cluster_accuracy(scores["counts"], self.cluster_labels.compute())
                logs[f"{stage}/cluster_error"] = 1.0 - accuracy
            self.log_dict(logs, **GLOBAL_VALUE)
            self.cluster_labels.reset()
        table.reset()

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_classification("val")

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        if self.supervised:
            return
        # The paper labels each cluster by its most confident validation example, then scores the test set.
        self._clusters_labelled = self.label_clusters_on_validation()
        if not self._clusters_labelled:
            rank_zero_warn("test/cluster_error labels the clusters on the data module's validation split, and this "
                           "test has none with labels: only test/cluster_error_majority is logged")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_classification("test")

    # --- the public API that callbacks and users call --------------------------------------

    class_conditional = True  # the decoder reads y: generate(style, labels) draws a style as each class

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of q(y|x): (n, *data_shape) -> (n, K)."""
        encoder = self.net("encoder")
        with eval_mode(encoder):
            return self.infer(x.to(self.device), encoder)[0]

    def style(self, x: torch.Tensor) -> torch.Tensor:
        """The style z of x: (n, *data_shape) -> (n, Z)."""
        encoder = self.net("encoder")
        with eval_mode(encoder):
            return self.infer(x.to(self.device), encoder)[1]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's input for x: (q(y|x), z), or W q(y|x) + z with cluster heads."""
        encoder = self.net("encoder")
        with eval_mode(encoder):
            logits, z = self.infer(x.to(self.device), encoder)
            return self.code(logits.softmax(1), z, self.net("heads") if self.hparams.cluster_heads else None)

    def draw_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes from the priors: one-hot y ~ Cat(1/K) and z ~ N(0, std^2 I), combined as the decoder's input."""
        device = generator.device if generator is not None else self.device
        y = F.one_hot(torch.randint(self.n_classes, (n,), generator=generator, device=device), self.n_classes).float()
        z = self.prior_std * torch.randn(n, self.latent_dim, generator=generator, device=device)
        with torch.no_grad():
            return self.code(y.to(self.device), z.to(self.device),
                             self.net("heads") if self.hparams.cluster_heads else None)

    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """G(code(q(y|x), z)); ``labels`` are not used (q(y|x) infers them)."""
        return self.sample(z=self.encode(x))

    def generate(self, style: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """G(code(one-hot(labels), style)): a style drawn as each category."""
        y = F.one_hot(labels.to(self.device), self.n_classes).float()
        with torch.no_grad():
            code = self.code(y, style.to(self.device), self.net("heads") if self.hparams.cluster_heads else None)
        return self.sample(z=code)


class ClusteringAAE(SemiSupervisedAAE):
    def __init__(self, n_classes: int = 16, latent_dim: int = 10, supervised: bool = False, n_labels: int = 10,
                 **kwargs):
        """Unsupervised clustering (Sec. 7): the semi-supervised AAE without labels, y taking K clusters
        (paper: 16 and 30 on MNIST, 9.55 % and 4.10 % test error).

        ``test/cluster_error`` is the paper's figure: each cluster takes the label of the validation example
        with the largest q(y = k|x), and every test image the label of its argmax cluster. ``val/cluster_error``
        labels the clusters the same way and scores the validation split itself (the K labelling examples
        among the scored). ``{val,test}/cluster_error_majority`` labels each cluster by the majority label of
        the very examples it then scores: optimistic, not comparable with the paper.

        Args:
            n_classes: the number of clusters K.
            latent_dim: dimension of the style z.
            supervised: False (True adds the classification phase: the semi-supervised AAE).
            n_labels: the data's labels, for the cluster errors (10 for Fashion-MNIST).
        """
        super().__init__(n_classes=n_classes, latent_dim=latent_dim, supervised=supervised, **kwargs)
        self.label_tables(n_labels)
