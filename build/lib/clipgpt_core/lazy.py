"""A package's public names, imported on first use (PEP 562): `import clipgpt_core` and the app's first
page then do not wait for torch, open_clip and diffusers, which the models need (~5 s on a 2-core CPU)."""
from __future__ import annotations

import importlib
import sys


def exports(package: str, where: dict[str, str]):
    """-> (__getattr__, __dir__) for `package`, from {public name: "module" or "module:name in it"}."""
    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = where[name].partition(":")
        value = getattr(importlib.import_module(f".{module}", package), attr or name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(where))
    return __getattr__, __dir__
