"""The models a checkpoint may name, and the settings it may give them.

A checkpoint's ``_class_path`` is text from a file someone else wrote: it is looked up by class name among the
models listed here (``LOADABLE``), never imported. A class the user names (``--model_class``, a config's
``model.class_path``) is the user's choice: it is imported, and must still be a model. ``checkpoints.py`` below
knows files and schemas only; this module is where the models say what may be loaded by name.
"""
import importlib
import inspect
import re
from pathlib import Path

from gan_lightning.checkpoints import CheckpointError, _short, check_settings, check_weights, plain, source_name
from gan_lightning.errors import first_line
from gan_lightning.models.aae import AAE
from gan_lightning.models.ali import ALI, BiGAN
from gan_lightning.models.base import AdversarialModule
from gan_lightning.models.flow import RealNVP
from gan_lightning.models.gan import GAN
from gan_lightning.models.semi_supervised_aae import ClusteringAAE, SemiSupervisedAAE
from gan_lightning.models.vae import VAE

LOADABLE: dict[str, type[AdversarialModule]] = {
    cls.__name__: cls for cls in (GAN, ALI, BiGAN, VAE, AAE, SemiSupervisedAAE, ClusteringAAE, RealNVP)}


def model_class(class_path: object, file: str | Path, chosen: str | None = None) -> type[AdversarialModule]:
    """The model class a checkpoint's ``_class_path`` names, looked up by name in ``LOADABLE``, never imported.
    ``chosen``: a class path the user named (``--model_class``, the config's ``model.class_path``); it is imported,
    because the user chose it, and must still be a model. Anything else: one ``CheckpointError`` line naming it."""
    if chosen is not None:
        module, _, name = chosen.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as err:
            raise CheckpointError(f"model class {chosen!r} cannot be imported "
                                  f"({type(err).__name__}: {first_line(err)}): "
                                  "name it as package.module.Class") from None
        if not (isinstance(cls, type) and issubclass(cls, AdversarialModule)):
            raise CheckpointError(f"model class {chosen!r} is not a subclass of "
                                  "gan_lightning.models.AdversarialModule: name a model class")
        return cls
    # gan_lightning.models.Class, or gan_lightning.models.<module>.Class with any module: a class that has moved
    # between the package's modules (SemiSupervisedAAE and ClusteringAAE left models.aae) still loads by its name.
    ours = isinstance(class_path, str) and re.fullmatch(r"gan_lightning\.models(?:\.\w+)?\.(\w+)", class_path)
    if ours and ours[1] in LOADABLE:
        return LOADABLE[ours[1]]
    named = isinstance(class_path, str) and re.fullmatch(r"[\w.]{1,200}", class_path)
    raise CheckpointError(
        f"{source_name(file)} names the model class {_short(class_path, 200)}, which is not one of "
        f"gan_lightning.models ({', '.join(LOADABLE)}): it is neither imported nor called, since a checkpoint from "
        "elsewhere can name any code. If it is a model class of your own and you trust it, name it yourself: "
        f"--model_class {class_path if named else 'pkg.module.Class'} (evaluate, sample) or model.class_path in the "
        "config (fit)")


def model_settings(cls: type, hparams: dict, file: str | Path) -> dict:
    """The checkpoint's saved settings that ``cls.__init__`` accepts (its own and those its ``**kwargs`` pass to
    the model classes above it). ``save_hyperparameters`` records plain values only; a dict with a
    ``class_path`` (an optimizer, say) is instantiated by whoever reads it, so a checkpoint holding one, or any
    other object, was not written by fit and is refused naming the setting."""
    accepted = {name for klass in cls.__mro__ if issubclass(klass, AdversarialModule) and "__init__" in vars(klass)
                for name in inspect.signature(klass.__init__).parameters if name not in ("self", "args", "kwargs")}
    settings = {key: value for key, value in hparams.items() if key in accepted}
    for key, value in settings.items():
        if not plain(value):
            raise CheckpointError(f"{source_name(file)}: model setting {key!r} holds {_short(value, 120)}, where a "
                                  "plain value (a number, a string, a list of them) belongs; it was not written by "
                                  "`python -m gan_lightning fit` and is not loaded")
    return settings


def checked_model(hparams: dict, state_dict: dict, file: str | Path, chosen: str | None = None,
                  overrides: dict | None = None) -> tuple[type[AdversarialModule], dict]:
    """The model class and settings of a checkpoint, checked before anything is built: the class looked up by name
    (``model_class``), its settings plain (``model_settings``) and of the types its signature declares
    (``check_settings``), and, with ``overrides`` (the config's own values) on top, building on the meta device
    the weights the file holds (``check_weights``)."""
    cls = model_class(hparams.get("_class_path"), file, chosen)
    settings = model_settings(cls, hparams, file)
    check_settings(cls, settings, file)
    check_weights(cls, {**settings, **(overrides or {})}, state_dict, file)
    return cls, settings
