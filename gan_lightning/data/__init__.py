"""The shared data: one DataModule, the datasets it can serve, a device-resident loader."""
from gan_lightning.data.datamodule import GANDataModule, to_model_range, to_uint8, to_unit_range
from gan_lightning.data.loader import Batches, DeviceTensorLoader
from gan_lightning.data.sources import DatasetCorruptError, DatasetNotFoundError

__all__ = ["GANDataModule", "Batches", "DeviceTensorLoader", "DatasetNotFoundError", "DatasetCorruptError", "to_model_range",
           "to_unit_range", "to_uint8"]
