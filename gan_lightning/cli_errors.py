"""Turn jsonargparse's nested validation reports into one short line that names the key and the fix."""
import difflib
import importlib
import inspect
import re

_NOISE = re.compile(r"Does not validate against any of the Union|Subtypes:|^\s*Errors:|Expected a <class 'NoneType'>"
                    r"|Given value|^\s*$")


_CHOICES = {  # what a user can name as model.class_path / data.class_path
    "model": ["gan_lightning.models.GAN", "gan_lightning.models.ALI", "gan_lightning.models.BiGAN",
              "gan_lightning.models.VAE", "gan_lightning.models.AAE", "gan_lightning.models.SemiSupervisedAAE",
              "gan_lightning.models.ClusteringAAE", "gan_lightning.models.RealNVP"],
    "data": ["gan_lightning.data.GANDataModule"],
}


def _import(path: str):
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def _options(cls) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]


def _key(message: str) -> str:
    """'Parser key "model"' ... 'Parser key "latent_dim"' -> 'model.init_args.latent_dim'."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    return ".init_args.".join(keys)


def shorten(message: str, option_strings: list[str]) -> str:
    m = re.search(r"class_path '([\w.]+)':\s*Option '(\w+)' is not accepted", message)
    if m and (cls := _import(m[1])) is not None:
        accepted = _options(cls)
        guess = difflib.get_close_matches(m[2], accepted, n=1)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        return f"{_key(message)}: {cls.__name__} has no option '{m[2]}'; {hint}accepted: {', '.join(accepted)}"
    m = re.search(r"class_path '([\w.]+)':\s*(?:module .* has no attribute|No module named)", message)
    if m:
        names = ", ".join(_CHOICES.get(_key(message).split(".")[0], ["see --help"]))
        return f"{_key(message)}: unknown class '{m[1]}'; available: {names}"
    m = re.search(r"unrecognized arguments: (\S+)", message)
    if m:
        flag = m[1].split("=")[0]
        guess = difflib.get_close_matches(flag, option_strings, n=1)
        return f"unknown option '{flag}'" + (f"; did you mean '{guess[0]}'?" if guess else "; see --help")
    lines = [re.sub(r"Parser key \"[^\"]+\":|Problem with given class_path '[\w.]+':", "", line).strip(" -")
             for line in message.splitlines() if not _NOISE.search(line)]
    detail = "; ".join(line for line in lines if line)
    key = _key(message)
    return f"{key}: {detail}" if key and not detail.startswith(key.split(".")[0] + ".") else detail
