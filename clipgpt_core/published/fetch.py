"""Fetching the published pieces: Hub repos through huggingface_hub (its cache, its progress bars), the S3
checkpoint by its URL (resumable, size checked, one writer at a time); offline, each missing piece is named with
the command that fetches it. `clipgpt fetch` is main()."""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Sequence

from ..errors import ClipGPTError
from .sources import SOURCES, source


def cache_root() -> Path:
    base = os.environ.get("CLIPGPT_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "clipgpt") / "published"


def is_offline() -> bool:
    # read at call time (huggingface_hub reads HF_HUB_OFFLINE once, at import); CLIPGPT_OFFLINE=0 is not "set"
    return (os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
            or os.environ.get("CLIPGPT_OFFLINE", "").strip().lower() not in ("", "0", "false", "no", "off"))


def _missing(message: str) -> Exception:
    from ..models.clip import WeightsNotAvailable    # imported late: it pulls in torch, `fetch --list` needn't
    return WeightsNotAvailable(message)


def _name_for(kind: str, location: str) -> str | None:
    return next((s.name for s in SOURCES.values() if s.kind == kind and s.location == location), None)


def _reason(exc: BaseException) -> str:
    """One line for a network failure: the HTTP status, or the socket's complaint, not urllib3's whole chain."""
    for e in (exc, exc.__cause__, exc.__context__):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status is not None:
            return f"HTTP {status}"
    text = str(exc)
    if m := re.search(r"Connection broken: (\w+\([^)]*\))", text):
        return f"connection broken: {m.group(1)}"
    if m := re.search(r"\[Errno -?\d+\] ([^'\")]+)", text):
        return m.group(1).strip()
    return "timed out" if "timed out" in text.lower() else (text.splitlines() or [type(exc).__name__])[0][:200]


def _hf_cache() -> str:
    # huggingface_hub's own rule (constants.HF_HUB_CACHE), but read now rather than at its import
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    hub = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return os.path.expandvars(os.path.expanduser(hub))


def _absent(folder: Path, patterns: Sequence[str]) -> list[str]:
    """The patterns no file in `folder` matches: a snapshot folder may hold only some of what we want."""
    have = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]   # is_file: blob exists
    return [pat for pat in patterns if not any(fnmatch.fnmatch(f, pat) for f in have)]


def _cached(repo_id: str, patterns: Sequence[str], revision: str | None = None) -> Path | None:
    from huggingface_hub import snapshot_download
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(patterns),
                                        cache_dir=_hf_cache(), local_files_only=True))
    except Exception:       # LocalEntryNotFoundError, or a cache folder it cannot read: either way, not here
        return None
    return None if _absent(folder, patterns) else folder


def _hub_offline(repo_id: str, patterns: Sequence[str]) -> str:
    name = _name_for("hub", repo_id)
    glob = any(c in p for p in patterns for c in "*?[")
    hf = f"hf download {repo_id} " + ("--include " if glob else "") + " ".join(shlex.quote(p) for p in patterns)
    return (f"{repo_id} ({', '.join(patterns)}) is not on this machine and downloads are off (HF_HUB_OFFLINE / "
            f"CLIPGPT_OFFLINE); on a machine with internet run " + (f"`clipgpt fetch {name}` or " if name else "")
            + f"`{hf}`, then copy its Hugging Face cache (HF_HOME, default ~/.cache/huggingface) over to this one")


def hub_files(repo_id: str, patterns: Sequence[str], revision: str | None = None) -> Path:
    """The snapshot folder (in the HF cache) holding `patterns` of `repo_id`, downloaded if missing and online."""
    patterns = list(patterns)
    if (folder := _cached(repo_id, patterns, revision)) is not None:
        return folder
    if is_offline():
        raise _missing(_hub_offline(repo_id, patterns))
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)
    import requests
    # huggingface_hub reads HF_ENDPOINT once at import; pass it as it is now
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    where = f"{repo_id} at {endpoint}"
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns, cache_dir=_hf_cache(),
                                        endpoint=endpoint))
    except GatedRepoError as e:
        raise _missing(f"{where} is gated ({_reason(e)}): accept its terms on {endpoint}/{repo_id}, then "
                       f"`hf auth login`") from None
    except RepositoryNotFoundError as e:
        raise _missing(f"no repo {where} ({_reason(e)}; a private repo needs `hf auth login`)") from None
    except RevisionNotFoundError as e:
        raise _missing(f"{where} has no revision {revision or 'main'} ({_reason(e)})") from None
    except LocalEntryNotFoundError as e:      # what snapshot_download makes of a failed connection or a 5xx
        cause = e.__cause__ or e.__context__
        if isinstance(cause, OfflineModeIsEnabled):
            raise _missing(_hub_offline(repo_id, patterns)) from None
        raise _missing(f"cannot fetch {where}: {_reason(cause) if cause else str(e).splitlines()[0]}") from None
    except EntryNotFoundError as e:
        url = getattr(e.response, "url", "") or ""
        raise _missing(f"{where}: {url.rsplit('/resolve/', 1)[-1].split('/', 1)[-1] or 'a file'} not found "
                       f"({_reason(e)})") from None
    except (requests.RequestException, OSError) as e:
        raise _missing(f"download of {where} failed: {_reason(e)}") from None
    if absent := _absent(folder, patterns):
        raise _missing(f"{where} has no file matching {', '.join(absent)}")
    return folder


def _url_offline(url: str, dest: Path) -> str:
    name = _name_for("url", url)
    return (f"{url} is not on this machine ({dest}) and downloads are off (HF_HUB_OFFLINE / CLIPGPT_OFFLINE); "
            f"on a machine with internet run " + (f"`clipgpt fetch {name}` or " if name else "")
            + f"`curl -L -C - -o {shlex.quote(str(dest))} {url}`, then copy the file to {dest}")


def _download(url: str, dest: Path, size: int | None, sha256: str | None) -> None:
    import requests
    from tqdm.auto import tqdm
    part = Path(f"{dest}.part")
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:       # not a prefix of this file: start over
        part.unlink()
        have = 0
    try:
        r = requests.get(url, headers={"Range": f"bytes={have}-"} if have else {}, stream=True, timeout=(10, 60))
    except requests.RequestException as e:
        raise _missing(f"cannot reach {url}: {_reason(e)}") from None
    with r:
        crange = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", r.headers.get("Content-Range", ""))
        whole = int(crange.group(2)) if crange and crange.group(2) != "*" else None
        length = int(r.headers["Content-Length"]) if r.headers.get("Content-Length", "").isdigit() else None
        if r.status_code == 200:               # no Range asked, or the server ignored it: restart from zero
            have, total = 0, length
        elif r.status_code == 206 and have and crange and crange.group(1) == str(have):
            total = whole if whole is not None else (None if length is None else have + length)
        elif r.status_code == 416 and have:    # nothing past `have`: the part may already be whole
            total = whole if whole is not None else have
        else:
            raise _missing(f"cannot download {url}: HTTP {r.status_code} {r.reason}")
        expected = size if size is not None else total
        if size is not None and total is not None and total != size:
            part.unlink(missing_ok=True)
            raise _missing(f"{url}: the server has {total} bytes, expected {size}; nothing kept")
        if r.status_code != 416:
            try:
                with open(part, "ab" if have else "wb") as f, \
                        tqdm(total=expected, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                             desc=dest.name) as bar:
                    for chunk in r.iter_content(1 << 16):   # small: a break loses < 64 KiB
                        f.write(chunk)
                        bar.update(len(chunk))
            except requests.RequestException as e:
                raise _missing(f"download of {url} broke off at {part.stat().st_size} bytes ({_reason(e)}); "
                               f"run it again to resume") from None
    got = part.stat().st_size
    if expected is not None and got < expected:
        raise _missing(f"download of {url} stopped at {got} of {expected} bytes; run it again to resume")
    if expected is not None and got != expected:
        part.unlink()
        raise _missing(f"{url}: got {got} bytes, expected {expected}; nothing kept")
    if sha256:
        with open(part, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest != sha256.lower():
            part.unlink()
            raise _missing(f"{url}: sha256 {digest}, expected {sha256}; nothing kept")
    os.replace(part, dest)      # only a whole, checked file ever has the final name


def _present(dest: Path, size: int | None) -> bool:
    return dest.is_file() and (size is None or dest.stat().st_size == size)


def url_file(url: str, dest: Path, size: int | None = None, sha256: str | None = None) -> Path:
    """`url` saved as `dest` (resumable through dest.part); no request at all when it is already there."""
    dest = Path(dest)
    if _present(dest, size):
        return dest
    if is_offline():
        raise _missing(_url_offline(url, dest))
    from filelock import FileLock
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{dest}.lock"):      # a second process waits here, then finds the file whole
        if not _present(dest, size):
            _download(url, dest, size, sha256)
    return dest


def mirror_url(s) -> str:
    """A URL source's address, or a mirror's: CLIPGPT_URL_<NAME> (clip-gpt -> CLIPGPT_URL_CLIP_GPT) replaces it."""
    return os.environ.get("CLIPGPT_URL_" + s.name.upper().replace("-", "_"), s.location)


def fetch(name: str) -> Path:
    """The file (url) or snapshot folder (hub) of the SOURCES entry `name`, fetched if missing."""
    s = source(name)
    if s.kind == "url":
        return url_file(mirror_url(s), cache_root() / name / s.files[0], s.size)
    return hub_files(s.location, s.files)


def _where(s) -> str:
    if s.kind == "url":
        dest = cache_root() / s.name / s.files[0]
        return f"{dest} ({'here' if _present(dest, s.size) else 'missing'})"
    here = _cached(s.location, s.files)
    return f"hub {s.location} -> {here or _hf_cache()} ({'here' if here else 'missing'})"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="clipgpt fetch", description="Download the seeds' published weights into the "
                                "caches (Hub repos: the HF cache; URLs: CLIPGPT_CACHE/published).")
    p.add_argument("names", nargs="*", metavar="NAME", help=f"one of: {', '.join(SOURCES)}")
    p.add_argument("--all", action="store_true", help="every published piece")
    p.add_argument("--list", action="store_true", help="list the pieces, where each goes and whether it is here")
    args = p.parse_args(argv)
    if args.list:
        for s in SOURCES.values():
            size = f"{s.size / 1e6:.1f} MB" if s.size else "size unknown"
            print(f"{s.name}: {s.what}\n    licence: {s.licence}; {size}; {_where(s)}")
        return
    names = list(SOURCES) if args.all else args.names
    if not names:
        p.error("name a piece (or --all, --list)")
    try:
        for name in names:
            print(f"{name}: {fetch(name)}")
    except ClipGPTError as e:
        print(f"clipgpt fetch: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
