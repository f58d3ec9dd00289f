"""Search an index served by a clip-retrieval back-end (`clipgpt serve`, `clip-retrieval back`).

The protocol is the one LAION's knn service spoke: GET /indices-list -> ["name", ...];
POST /knn-service {"text" | "image" (base64) | "embedding_input", "indice_name", "modality",
"num_images", ...} -> [{"id", "similarity", "caption", "image_path", "image" (base64), ...}, ...].
Implemented here with `requests` (clip_retrieval.clip_client would import flask and faiss).

    RemoteIndex("http://127.0.0.1:1234", "shapes").search(text="a red circle", k=5)
"""
from __future__ import annotations

import base64
import io
import logging
from urllib.parse import urlsplit

import numpy as np
import requests

from ..errors import ClipGPTError, InputError
from .local import Hit

MODALITIES = ("image", "text")   # which of the server's indices to search: image.index or text.index


class RemoteError(ClipGPTError, RuntimeError):
    """A remote back-end that cannot be used; the message says why and what to do."""


class RemoteIndex:
    def __init__(self, url: str, indice_name: str, timeout: float = 5.0):
        if not isinstance(url, str) or not url.strip():
            raise RemoteError("Give the back-end's address, e.g. http://127.0.0.1:1234")
        url = url.strip().rstrip("/")
        for suffix in ("/knn-service", "/indices-list"):   # accept the endpoint URL too
            if url.endswith(suffix):
                url = url[: -len(suffix)]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteError(f"{url!r} is not an http(s) URL; write it like http://127.0.0.1:1234")
        try:
            parts.port
        except ValueError as e:
            raise RemoteError(f"{url!r} has a bad port: {e}") from None
        self.url = url
        self.indice_name = indice_name
        self.timeout = timeout
        self._served: list[str] | None = None

    def __repr__(self) -> str:
        return f"RemoteIndex({self.url!r}, {self.indice_name!r})"

    # -- protocol -------------------------------------------------------------------------------
    def _request(self, method: str, endpoint: str, payload=None):
        url = f"{self.url}/{endpoint}"
        try:
            r = requests.request(method, url, json=payload, timeout=self.timeout)
        except requests.Timeout:
            raise RemoteError(f"{self.url} did not answer within {self.timeout:g} s. Is a clip-retrieval "
                              f"back-end running there and not overloaded?") from None
        except requests.RequestException as e:   # refused, DNS failure, reset, bad TLS ...
            raise RemoteError(
                f"Could not reach {self.url} ({_reason(e)}). Start a clip-retrieval back-end there: "
                f"clipgpt serve --index NAME=INDEX_FOLDER --port PORT "
                f"(or clip-retrieval back --indices_paths ...), then check the host and port.") from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code >= 400:
            if isinstance(body, dict) and isinstance(body.get("message"), str) and r.status_code != 404:
                raise RemoteError(f"The back-end at {self.url} failed on {endpoint} (HTTP {r.status_code}): "
                                  f"{body['message']}. Its log says more.")
            raise RemoteError(f"{self.url} answered HTTP {r.status_code} to /{endpoint}: it is not a "
                              f"clip-retrieval back-end (or not at this address).")
        if body is None:
            kind = r.headers.get("Content-Type", "unknown").split(";")[0]
            raise RemoteError(f"{self.url} sent {kind}, not JSON, for /{endpoint}: it is not a "
                              f"clip-retrieval back-end.")
        return body

    def indices(self) -> list[str]:
        """The names of the indices the server serves."""
        body = self._request("GET", "indices-list")
        if not isinstance(body, list) or not all(isinstance(n, str) for n in body):
            raise RemoteError(f"{self.url}/indices-list did not return a list of index names: it is not "
                              f"a clip-retrieval back-end.")
        self._served = body
        return list(body)

    def search(self, text: str | None = None, image=None, embedding=None, k: int = 10,
               modality: str = "image") -> list[Hit]:
        """Nearest neighbours of exactly one of: a text, a PIL image (or path), an embedding vector.

        modality "image" searches the indexed images, "text" the indexed captions."""
        if sum(x is not None for x in (text, image, embedding)) != 1:
            raise InputError("Give exactly one of text, image or embedding")
        if modality not in MODALITIES:
            raise InputError(f"modality must be one of {MODALITIES}")
        k = int(k)
        if k < 1:
            raise InputError("k must be at least 1")
        payload = {"indice_name": self.indice_name, "modality": modality, "num_images": k,
                   "num_result_ids": k,
                   # the server's optional filters: dedup would merge near-identical results and
                   # return fewer than k; the safety/violence models are usually not loaded
                   "deduplicate": False, "use_safety_model": False, "use_violence_detector": False,
                   "use_mclip": False}
        if text is not None:
            text = " ".join(str(text).split())
            if not text:
                raise InputError("Empty text: type a few words to search for")
            payload["text"] = text
        elif image is not None:
            from ..images import load_image
            buf = io.BytesIO()
            load_image(image).save(buf, format="PNG")
            payload["image"] = base64.b64encode(buf.getvalue()).decode("ascii")
        else:
            v = np.asarray(embedding, dtype=np.float32).reshape(-1)
            norm = float(np.linalg.norm(v))
            if not np.isfinite(norm) or norm == 0:
                raise InputError("The embedding is zero or not finite")
            payload["embedding_input"] = (v / norm).tolist()   # the server does not normalise it

        if self._served is None:
            self.indices()
        if self.indice_name not in self._served:
            # clip back answers an unknown name with a bare HTTP 500; say which names it has
            raise RemoteError(f"{self.url} serves no index named {self.indice_name!r}; it serves: "
                              f"{', '.join(self._served) or 'nothing'}.")
        body = self._request("POST", "knn-service", payload)
        if isinstance(body, dict) and "message" in body:
            raise RemoteError(f"The back-end at {self.url} failed: {body['message']}")
        if not isinstance(body, list):
            raise RemoteError(f"{self.url}/knn-service did not return a list of results: it is not a "
                              f"clip-retrieval back-end.")
        return [_to_hit(row) for row in body if isinstance(row, dict) and "id" in row]


def _reason(e: requests.RequestException) -> str:
    text = str(e)
    for key, plain in (("Connection refused", "connection refused"),
                       ("Name or service not known", "unknown host"),
                       ("Temporary failure in name resolution", "unknown host"),
                       ("nodename nor servname", "unknown host")):
        if key in text:
            return plain
    return type(e).__name__


def _to_hit(row: dict) -> Hit:
    image = None
    if row.get("image"):
        try:
            from PIL import Image
            image = Image.open(io.BytesIO(base64.b64decode(row["image"])))
            image.load()
        except Exception as e:  # a broken thumbnail should not sink the whole search
            logging.warning("could not decode the image of result %s: %s", row.get("id"), e)
            image = None
    return Hit(id=int(row["id"]), similarity=float(row.get("similarity", float("nan"))),
               image_path=row.get("image_path") or row.get("url"),
               caption=row.get("caption") or None, image=image)
