"""Which server folders (and remote back-ends) an app may reach on behalf of its users.

On a laptop (`python app.py` on loopback) the user is the server's owner: any folder goes. On a shared
deployment (a Hugging Face Space, `--share`, or `--host` other than loopback) a user types paths on
someone else's machine, so folders are off unless the owner names them with `--allow-dir DIR`; a path
is checked after `~`, `..` and symlinks are resolved, so `A/../B` or a link out of A is still B.
Likewise a shared app fetches from no clip-retrieval back-end its owner did not name with
`--allow-backend URL`: otherwise any user could make the server request any address it can reach.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ClipGPTError, InputError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class AccessError(ClipGPTError, ValueError):
    """A path the app may not read; the message says how the owner can allow it."""


def is_shared(host: str = "127.0.0.1", share: bool = False) -> bool:
    """True on a Space (SPACE_ID is set), with a public --share link, or when bound beyond loopback."""
    return bool(os.environ.get("SPACE_ID")) or share or host not in LOOPBACK


@dataclass(frozen=True)
class ServerFiles:
    """allowed=None: any folder (a local app). Otherwise only these folders and what lies below them.
    backends=None: any back-end URL; otherwise only these (scheme://host:port)."""
    allowed: tuple[Path, ...] | None = None
    backends: tuple[str, ...] | None = None

    @classmethod
    def shared(cls, allow_dirs=(), allow_backends=()) -> "ServerFiles":
        return cls(tuple(Path(d).expanduser().resolve() for d in allow_dirs),
                   tuple(origin(u) for u in allow_backends))

    def check_backend(self, url: str) -> str:
        """The URL, or AccessError when the app may not fetch from it."""
        if self.backends is None or origin(url) in self.backends:
            return url
        allowed = f" (it may reach {', '.join(self.backends)})" if self.backends else ""
        raise AccessError(f"This app is shared, so it queries only the back-ends its owner named{allowed}. "
                          f"Its owner can allow this one by starting it with --allow-backend {origin(url)}")

    def check(self, path: str | Path, what: str = "folder") -> Path:
        """The resolved path, or AccessError when the app may not read it."""
        text = str(path).strip()
        if "\x00" in text:       # pasted text can carry one; the OS takes no such path (Python: ValueError)
            shown = text.replace("\x00", "\\x00")[:200]
            raise InputError(f"That {what} path contains a NUL character (\\x00), which no path can hold; "
                             f"type or paste it again: {shown!r}")
        resolved = Path(text).expanduser().resolve()
        if self.allowed is None or any(resolved == a or a in resolved.parents for a in self.allowed):
            return resolved
        if not self.allowed:
            raise AccessError(f"This app is shared, so reading {what}s on its server is off. Its owner can "
                              f"allow one by starting it with --allow-dir {resolved}")
        raise AccessError(f"{resolved} is outside the folders this shared app may read "
                          f"({', '.join(map(str, self.allowed))}). Its owner can allow it by starting the "
                          f"app with --allow-dir {resolved.parent if resolved.suffix else resolved}")


def origin(url: str) -> str:
    """scheme://host:port of a URL, the unit a back-end is allowed by (no default port filled in)."""
    parts = urlsplit(str(url).strip())
    return f"{parts.scheme.lower()}://{(parts.netloc or parts.path).lower().rstrip('/')}"
