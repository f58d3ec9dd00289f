"""Read a published PyTorch pickle (a whole pickled nn.Module, as seed 000's clip_gpt.pt is) without running
anything from the file.

torch.load(weights_only=True) refuses such a file outright: it names classes (`clip_gpt.clip_gpt.CLIPGPT`,
`clip.model.Transformer`, ...) that a pickle may only reach by calling them. Here the pickle's `find_class` is
ours: torch's tensor rebuilders, storages and a few plain containers are the real thing; a module class,
under whatever path the file names it, becomes a `Holder`, an inert object that keeps the state pickle hands
it (its `_parameters`, `_buffers`, `_modules` and plain attributes) and has no code of the file's; any other
callable is refused before it is called. torch.load still does the zip archive and the storages
(`pickle_module=` is its hook for exactly this).

    root = load_module_pickle("clip_gpt.pt")          # a Holder (or a dict, for a pickled state dict)
    root.class_path                                   # 'clip_gpt.clip_gpt.CLIPGPT'
    state = module_state(root)                        # {'token_embedding.weight': tensor, ...}
"""
from __future__ import annotations

import _compat_pickle
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

from ..errors import BundleError

# the real callables a checkpoint of tensors and module state needs, and nothing else
ALLOWED = {
    ("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"), ("torch", "Size"), ("torch", "device"),
    ("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "object"),
    ("copyreg", "_reconstructor"),
}
DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}
# where module classes live: the seed's package, OpenAI CLIP's, a training script's __main__, torch.nn, open_clip
HOLDER_MODULES = re.compile(r"^(clip_gpt|clip|__main__|torch\.nn|open_clip)(\.|$)")
CLASS_NAME = re.compile(r"^[A-Z][A-Za-z0-9_]*$")


class UnsafePickle(BundleError):
    """The file asks to call something that is not a tensor rebuilder, a storage or a module class."""


class Holder:
    """An inert stand-in for a pickled class: it keeps whatever state unpickling gives it."""
    class_path = "?"

    def __init__(self, *args, **kwargs):       # REDUCE with arguments: kept, never interpreted
        self.__dict__["_args"] = (args, kwargs)

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):   # (dict, slots)
            state = {**(state[0] or {}), **state[1]}
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<{self.class_path}>"


def _holder(module: str, name: str) -> type:
    return type(name, (Holder,), {"class_path": f"{module}.{name}", "__module__": "clipgpt.inert"})


def _restricted_unpickler(source: str):
    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            # protocol 2 (torch.save's) writes Python 2 names: __builtin__.set, copy_reg._reconstructor
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            if (module, name) in ALLOWED:
                return super().find_class(module, name)
            if module == "torch" and name in DTYPES:
                return getattr(torch, name)
            if HOLDER_MODULES.match(module) and CLASS_NAME.match(name):
                return _holder(module, name)
            raise UnsafePickle(f"{source} asks to call {module}.{name} while loading; only tensors, storages and "
                               f"module state are read from a checkpoint, so it was refused and nothing from the "
                               f"file ran. Is it the file you meant?")
    return RestrictedUnpickler


def _pickle_module(source: str):
    """What torch.load(pickle_module=...) takes: an Unpickler class and a load function."""
    unpickler = _restricted_unpickler(source)

    class Module:
        Unpickler = unpickler
        UnpicklingError = pickle.UnpicklingError

        @staticmethod
        def load(f, **kwargs):
            return unpickler(f, **kwargs).load()
    return Module


def load_module_pickle(path: str | Path):
    """A torch.save'd file -> its root object, module classes as Holders. Refuses TorchScript archives (torch
    would run their code) and any callable outside the allow-list (UnsafePickle); a truncated or non-pickle
    file gets a BundleError."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"No file at {path}")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            raise BundleError(f"{path.name} is a TorchScript archive (OpenAI's own CLIP .pt files are), not a pickled "
                              f"module or state dict; TorchScript runs code, so it is not read here")
    try:
        # weights_only=False hands unpickling to our pickle_module, whose find_class is the restriction
        return torch.load(path, map_location="cpu", pickle_module=_pickle_module(path.name), weights_only=False)
    except UnsafePickle:
        raise
    except Exception as e:       # truncated, not a torch file, a tensor type torch cannot rebuild
        raise BundleError(f"{path.name} could not be read as a PyTorch checkpoint ({type(e).__name__}: "
                          f"{str(e)[:200]}); the file may be truncated or not a checkpoint") from None


def module_state(obj, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """The state dict of an unpickled module tree (Holders, or real nn.Modules): parameters and persistent
    buffers, by the names nn.Module.state_dict would give them."""
    if isinstance(obj, torch.nn.Module):
        return OrderedDict((prefix + k, v) for k, v in obj.state_dict().items())
    attrs = getattr(obj, "__dict__", {})
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    skip = attrs.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, t in (attrs.get(group) or {}).items():
            if isinstance(t, torch.Tensor) and name not in skip:
                out[prefix + name] = t.detach()
    for name, child in (attrs.get("_modules") or {}).items():
        if child is not None:
            out.update(module_state(child, f"{prefix}{name}."))
    return out


def attribute(obj, path: str, default=None):
    """A plain attribute of an unpickled module tree, by dotted path through submodules ('transformer.resblocks.0.attn.num_heads')."""
    for part in path.split("."):
        attrs = getattr(obj, "__dict__", {})
        if part in attrs:
            obj = attrs[part]
        elif part in (attrs.get("_modules") or {}):
            obj = attrs["_modules"][part]
        else:
            return default
    return obj
