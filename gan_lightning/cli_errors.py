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


def _no_option(key: str, cls, option: str, accepted: list[str]) -> str:
    guess = difflib.get_close_matches(option, accepted, n=1)
    hint = f"did you mean '{guess[0]}'? " if guess else ""
    return f"{key}: {cls.__name__} has no option '{option}'; {hint}accepted: {', '.join(accepted)}"


def shorten(message: str, option_strings: list[str]) -> str:
    m = re.search(r"class_path '([\w.]+)':\s*Option '(\w+)' is not accepted", message)
    if m and (cls := _import(m[1])) is not None:
        return _no_option(_key(message), cls, m[2], _options(cls))
    # A callable class (an optimizer, a scheduler): Callable[[Iterable], Optimizer] ... Option 'lrr' is not accepted.
    # Got value: Namespace(class_path='torch.optim.Adam', ...). The Callable's arguments (the parameters) are the
    # model's to give, not the config's: they are not listed.
    m = re.search(r"Option '(\w+)' is not accepted\. Got value: Namespace\(class_path='([\w.]+)'", message)
    if m and (cls := _import(m[2])) is not None:
        given = re.search(r"Callable\[\[([^\]]*)\]", message)
        n_given = len([arg for arg in given[1].split(",") if arg.strip()]) if given else 0
        return _no_option(f"{_key(message)}.init_args", cls, m[1], _options(cls)[n_given:])
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


def misconfigured(err: BaseException, trainer_class: type) -> str | None:
    """One line for Lightning's ``MisconfigurationException`` where a trainer setting is at fault, naming it
    (``trainer.max_epochs: ...``): one raised while the Trainer was built from the config (every argument it has is
    the config's), or one whose message names a Trainer argument in backquotes or as ``Trainer(strategy=...)`` (a
    check at fit start); also a ``ValueError`` raised by Lightning's own code naming one (``val_check_interval``
    longer than an epoch, at fit start). None for any other, which code caused: its traceback is what helps."""
    names = [name for name in inspect.signature(trainer_class.__init__).parameters if name != "self"]
    innermost = err.__traceback__
    while innermost is not None and innermost.tb_next is not None:
        innermost = innermost.tb_next
    if isinstance(err, ValueError) and (innermost is None or not str(
            innermost.tb_frame.f_globals.get("__name__", "")).startswith("lightning.")):
        return None  # ours or the user's code: not a setting Lightning refused
    message = " ".join(str(err).split())
    named = [name for name in re.findall(r"`(\w+)`", message) + re.findall(r"Trainer\([^`)]*?\b(\w+)=", message)
             if name in names]
    building = None  # the arguments of the Trainer.__init__ that raised it, if it did
    tb = err.__traceback__
    while tb is not None:
        local = tb.tb_frame.f_locals
        if (tb.tb_frame.f_code.co_name == "__init__" and isinstance(local.get("self"), trainer_class)
                and all(name in local for name in names)):
            building = {name: local[name] for name in names}
        tb = tb.tb_next
    if building is None and not named:
        return None
    if not named and building:  # "No supported gpu backend found!": the setting whose value it names
        named = [name for name, value in building.items() if isinstance(value, str) and len(value) > 1
                 and re.search(rf"(?<!\w){re.escape(value)}(?!\w)", message, re.IGNORECASE)]
    key = f"trainer.{named[0]}" if named else "trainer"
    if named and named[0] == "accelerator" and "available" not in message:
        message += " Set trainer.accelerator to one this machine has: cpu, or auto (a GPU where there is one)."
    return f"{key}: {message}"
