"""One registry pattern for every pluggable kind: data sets, models, distillation methods,
prune methods, quant methods, loggers and stages.

A registry is a package; each module in it is one entry, named by its file. Names are listed
from the files without importing them, so listing and "did you mean" stay torch-free; an
entry's module is imported the first time it is asked for. What an entry module may define
(each optional, the kind's code says which it uses):

- ``Schema``: a dataclass, the entry's config node (registered with Hydra's ConfigStore,
  so composition types its keys; ``conf/<group>/<name>.yaml`` pulls it in);
- ``check(cfg) -> Iterable[str | None]``: problems with the composed config, one line each;
- the builder the kind calls (``build``, ``prune``, ``quantize``, ``Term``, ``STAGE`` ...).

Entry modules keep heavy imports (torch, Lightning, transformers) inside their functions, so
composing and checking a config imports none of them. Adding an entry is its module plus its
yaml in ``conf/<group>/``; nothing else names it.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any, Iterator, Optional

from lepton_exp.errors import ConfigError, did_you_mean


class Registry:
    def __init__(self, kind: str, package: str, key: str):
        self.kind = kind  # "data set", for messages
        self.package = package  # "lepton_exp.data.sets": one module per entry
        self.key = key  # the config key that selects an entry ("data.name"), for messages

    def names(self) -> tuple[str, ...]:
        spec = importlib.util.find_spec(self.package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        return tuple(sorted(info.name for info in pkgutil.iter_modules(locations)
                            if not info.name.startswith("_")))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def unknown(self, name: Any) -> str:
        """The one-line error for a name that is not registered."""
        names = self.names()
        return (f"{self.key}={name} is not a known {self.kind}{did_you_mean(str(name), names)}:"
                f" choose one of {', '.join(names)}")

    def get(self, name: str) -> ModuleType:
        """The entry's module (imported on first use); ConfigError for an unknown name."""
        if name not in self:
            raise ConfigError(self.unknown(name))
        return importlib.import_module(f"{self.package}.{name}")

    def attribute(self, name: str, attribute: str, default: Any = None) -> Any:
        return getattr(self.get(name), attribute, default)

    def schemas(self) -> dict[str, type]:
        """{entry name: its Schema} for the entries that declare one."""
        found = {}
        for name in self.names():
            schema = getattr(self.get(name), "Schema", None)
            if schema is not None:
                found[name] = schema
        return found

    def check(self, name: Any, cfg: Any) -> list[Optional[str]]:
        """The entry's own checks of ``cfg`` (the unknown-name error when it does not exist)."""
        if name not in self:
            return [self.unknown(name)]
        check = getattr(self.get(name), "check", None)
        return list(check(cfg)) if check is not None else []

