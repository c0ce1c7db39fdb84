"""The command line: ``python -m gan_lightning fit --config configs/bigan.yaml`` (also validate, test)."""
import sys

import lightning as L
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

import gan_lightning.callbacks  # noqa: F401  (makes the callbacks' short names known to configs)
import gan_lightning.models  # noqa: F401  (makes the models' short names known to configs)
from gan_lightning.data import DatasetNotFoundError, GANDataModule


class GANLightningCLI(LightningCLI):
    """LightningCLI with the data's shape linked into the model and one optimizer per player."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.data_shape", "model.init_args.data_shape", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as err:  # a value the constructors refuse: say which, no traceback
            self.parser.error(str(err))


def main(args: list[str] | None = None) -> None:
    try:
        GANLightningCLI(
            L.LightningModule,
            GANDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            auto_configure_optimizers=False,  # each model builds one optimizer per player
            save_config_kwargs={"overwrite": True},  # resumes and requeues rerun in the same folder
            parser_kwargs={"parser_mode": "omegaconf"},
            args=args,
        )
    except (DatasetNotFoundError, FloatingPointError) as err:
        sys.exit(f"gan_lightning: error: {err}")
