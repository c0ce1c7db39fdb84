"""Turn jsonargparse's nested validation reports into one short line that names the key and the fix."""
import difflib
import importlib
import importlib.util
import inspect
import pkgutil
import re
import sys
from types import ModuleType

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


_BASES = {"model": ("lightning", "LightningModule"), "data": ("lightning", "LightningDataModule"),
          "trainer.callbacks": ("lightning", "Callback")}  # what the key's class must be, to list the right ones


def _cause(message: str, class_path: str) -> str:
    """The error jsonargparse got importing ``class_path``: the lines indented under 'Problem with given class_path'."""
    lines = message.splitlines()
    for i, line in enumerate(lines):
        if f"class_path '{class_path}':" in line:
            indent = len(line) - len(line.lstrip())
            cause = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                cause.append(nxt.strip())
            return "; ".join(c for c in cause if c)
    return ""


def _loaded(path: str):
    """The module or attribute at ``path`` if the import jsonargparse just ran left it in ``sys.modules``, else None.
    Reads only what is already imported: nothing is imported or called here."""
    if path in sys.modules:
        return sys.modules[path]
    parent, _, name = path.rpartition(".")
    return vars(sys.modules[parent]).get(name) if parent in sys.modules else None


def _classes(module, key: str) -> list[str]:
    """The classes ``module`` defines (or its submodules do), those of the kind ``key`` needs where there are any."""
    prefix = module.__name__
    found = {name: obj for name, obj in vars(module).items() if isinstance(obj, type) and not name.startswith("_")
             and str(getattr(obj, "__module__", "")).split(".")[:prefix.count(".") + 1] == prefix.split(".")}
    base = _BASES.get(key.split(".init_args.")[0])
    if base and base[0] in sys.modules and isinstance(kind := getattr(sys.modules[base[0]], base[1], None), type):
        fitting = {name: obj for name, obj in found.items() if issubclass(obj, kind)}
        found = fitting or found
    return sorted(found)


def _outside(class_path: str, cause: str, key: str) -> str | None:
    """One line for a class outside the package that did not import: the module is not on the path (and where to
    run from), a package lacks the module (and which it has), the module lacks the class (and which it has), or
    importing the module failed (and the error it raised)."""
    module, _, name = class_path.rpartition(".")
    if not module or _loaded(class_path) is not None:  # it imported: the problem is elsewhere
        return None
    prefix = f"{key}: " if key else ""
    missing = re.fullmatch(r"No module named '([\w.]+)'", cause)
    absent = re.fullmatch(r"module '([\w.]+)' has no attribute '(\w+)'", cause)
    if absent and absent[1] == module and absent[2] == name and isinstance(_loaded(module), ModuleType):
        have = _classes(_loaded(module), key)
        guess = difflib.get_close_matches(name, have, n=1)
        hint = f"did you mean '{module}.{guess[0]}'? " if guess else ""
        listing = f"it has: {', '.join(have)}" if have else "it defines no classes"
        return f"{prefix}module '{module}' has no class '{name}'; {hint}{listing}"
    sub = (missing[1] if missing else f"{absent[1]}.{absent[2]}" if absent else None)
    if sub and (module == sub or module.startswith(sub + ".")):  # the named module itself was not found
        package, _, child = sub.rpartition(".")
        if not package:
            try:
                found = importlib.util.find_spec(sub) is not None  # top level: looks, imports nothing
            except (ImportError, ValueError):
                found = False
            if not found:
                return (f"{prefix}cannot import '{class_path}': No module named '{sub}'; run from the folder that "
                        f"holds {sub}/, or add that folder to PYTHONPATH")
        elif isinstance(pkg := _loaded(package), ModuleType):
            where = list(getattr(pkg, "__path__", []) or [])
            have = sorted(m.name for m in pkgutil.iter_modules(where))  # lists files; imports nothing
            guess = difflib.get_close_matches(child, have, n=1)
            hint = f"; did you mean '{package}.{guess[0]}'?" if guess else ""
            return (f"{prefix}cannot import '{class_path}': No module named '{sub}' (package '{package}' is "
                    f"{', '.join(where) or '?'}, which holds: {', '.join(have) or 'no modules'}){hint}")
    if missing:  # found, but something it imports is not installed
        return (f"{prefix}module '{module}' failed to import: {cause}; install '{missing[1]}' or fix that import in "
                f"'{module}'")
    return f"{prefix}module '{module}' failed to import: {cause}" if cause else None


def shorten(message: str, option_strings: list[str]) -> str:
    m = re.search(r"class_path '([\w.]+)':\s*Option '(\w+)' is not accepted", message)
    if m and (cls := _import(m[1])) is not None:
        accepted = _options(cls)
        guess = difflib.get_close_matches(m[2], accepted, n=1)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        return f"{_key(message)}: {cls.__name__} has no option '{m[2]}'; {hint}accepted: {', '.join(accepted)}"
    m = re.search(r"Problem with given class_path '([\w.]+)':", message)
    if m and not m[1].startswith("gan_lightning.") and (line := _outside(m[1], _cause(message, m[1]), _key(message))):
        return line
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
