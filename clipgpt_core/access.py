"""Which server folders an app may read on behalf of its users.

On a laptop (`python app.py` on loopback) the user is the server's owner: any folder goes. On a shared
deployment (a Hugging Face Space, `--share`, or `--host` other than loopback) a user types paths on
someone else's machine, so folders are off unless the owner names them with `--allow-dir DIR`; a path
is checked after `~`, `..` and symlinks are resolved, so `A/../B` or a link out of A is still B.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from .errors import ClipGPTError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class AccessError(ClipGPTError, ValueError):
    """A path the app may not read; the message says how the owner can allow it."""


def is_shared(host: str = "127.0.0.1", share: bool = False) -> bool:
    """True on a Space (SPACE_ID is set), with a public --share link, or when bound beyond loopback."""
    return bool(os.environ.get("SPACE_ID")) or share or host not in LOOPBACK


@dataclass(frozen=True)
class ServerFiles:
    """allowed=None: any folder (a local app). Otherwise only these folders and what lies below them."""
    allowed: tuple[Path, ...] | None = None

    @classmethod
    def shared(cls, allow_dirs=()) -> "ServerFiles":
        return cls(tuple(Path(d).expanduser().resolve() for d in allow_dirs))

    def check(self, path: str | Path, what: str = "folder") -> Path:
        """The resolved path, or AccessError when the app may not read it."""
        resolved = Path(str(path).strip()).expanduser().resolve()
        if self.allowed is None or any(resolved == a or a in resolved.parents for a in self.allowed):
            return resolved
        if not self.allowed:
            raise AccessError(f"This app is shared, so reading {what}s on its server is off. Its owner can "
                              f"allow one by starting it with --allow-dir {resolved}")
        raise AccessError(f"{resolved} is outside the folders this shared app may read "
                          f"({', '.join(map(str, self.allowed))}). Its owner can allow it by starting the "
                          f"app with --allow-dir {resolved.parent if resolved.suffix else resolved}")
