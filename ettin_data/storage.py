"""Object-store access for remote inputs and outputs: URL helpers, one ``Store`` per (URL, local folder)
that lists, uploads and downloads through mosaicml-streaming's storage layer (``CloudUploader`` /
``CloudDownloader``; S3-compatible servers via ``S3_ENDPOINT_URL``), and storage errors turned into one
readable line. The staging and upload order of a run live in ``remote.py``."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ConfigError, EttinError, InputError

__all__ = ["SCHEMES", "is_remote", "is_shard", "cache_root", "local_path", "storage_error", "Store", "store"]

SCHEMES = ("s3", "gs", "oci", "azure", "azure-dl", "hf", "dbfs", "alipan")
_SHARD = re.compile(r"shard\.\d+\.mds(\.[\w:]+)?$")
_THREADS = 16


def is_remote(path: str | os.PathLike[str]) -> bool:
    """True for object-store URLs (``s3://bucket/prefix``); plain paths and ``file://`` are local."""
    return urllib.parse.urlparse(str(path)).scheme in SCHEMES


def is_shard(rel: str) -> bool:
    return bool(_SHARD.search(rel.rsplit("/", 1)[-1]))


def cache_root(cache_dir: str | None) -> Path:
    return Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "ettin-data-cache"


def local_path(url: str, cache_dir: str | None, kind: str) -> Path:
    """A stable local folder for ``url``; it ends with the URL's last name so stages see the same names."""
    url = url.rstrip("/")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    name = url.rsplit("/", 1)[-1] if url.count("/") > 2 else urllib.parse.urlparse(url).netloc
    return cache_root(cache_dir) / f"{kind}-{digest}" / (name or "root")


# ---------------------------------------------------------------- storage access, errors as one line

def storage_error(e: BaseException, url: str) -> EttinError:
    """Turn a storage library's exception into one line that says what to fix."""
    if isinstance(e, EttinError):
        return e
    name = type(e).__name__
    text = str(e).strip().splitlines()[0] if str(e).strip() else name
    bucket = urllib.parse.urlparse(url).netloc
    code = ""
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):
        code = str(resp.get("Error", {}).get("Code", ""))
    if name in ("NoCredentialsError", "PartialCredentialsError") or "credentials" in text.lower():
        return ConfigError(f"{url}: no credentials for the object store ({text}); set AWS_ACCESS_KEY_ID and "
                           "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE; GCS_KEY/GCS_SECRET for gs://)")
    if code in ("404", "NoSuchBucket") or "does not exist" in text or "NoSuchBucket" in text:
        return InputError(f"{url}: bucket {bucket!r} does not exist (or is not visible with these credentials); "
                          "create it or fix the URL")
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return InputError(f"{url}: access denied ({code}); check the credentials and the bucket's permissions")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionError", "ReadTimeoutError"):
        return InputError(f"{url}: cannot reach the object store ({text}); check the network or S3_ENDPOINT_URL")
    if isinstance(e, ImportError):
        return ConfigError(f"{url}: this storage needs an extra package ({text})")
    return InputError(f"{url}: {name}: {text}")


@contextmanager
def _storage(url: str) -> Iterator[None]:
    try:
        yield
    except EttinError:
        raise
    except Exception as e:
        raise storage_error(e, url) from None


class Store:
    """One remote folder (``url``) and its local counterpart (``local``): list, upload, download."""

    def __init__(self, url: str, local: str | Path):
        self.url = url.rstrip("/")
        self.local = Path(local)
        self._uploader: Any = None
        self._tls = threading.local()

    def _up(self) -> Any:
        if self._uploader is None:
            with _storage(self.url):
                from streaming.base.storage.upload import CloudUploader

                self.local.mkdir(parents=True, exist_ok=True)
                log = logging.getLogger("streaming.base.storage.upload")
                level = log.level
                log.setLevel(logging.ERROR)  # "directory exists and not empty": expected here
                try:
                    self._uploader = CloudUploader.get((str(self.local), self.url), keep_local=True, exist_ok=True)
                finally:
                    log.setLevel(level)
        return self._uploader

    def check(self) -> None:
        """Fail early, in one line, on a missing bucket or missing credentials."""
        self._up()
        self.list()

    def list(self) -> list[str] | None:
        """Keys under the folder, relative to it (None when the store cannot list, e.g. hf://)."""
        up = self._up()
        prefix = urllib.parse.urlparse(self.url).path.lstrip("/")
        with _storage(self.url):
            try:
                keys = up.list_objects("")
            except NotImplementedError:
                return None
        out = []
        for k in keys or []:
            k = k.lstrip("/")
            if prefix and k.startswith(prefix + "/"):
                out.append(k[len(prefix) + 1:])
            elif not prefix:
                out.append(k)
        return sorted(out)

    def upload(self, rel: str) -> None:
        with _storage(f"{self.url}/{rel}"):
            self._up().upload_file(rel)

    def download(self, rel: str, *, fresh: bool = False, missing_ok: bool = False) -> bool:
        """Download ``rel`` into the local folder (kept if present unless ``fresh``); False: absent (missing_ok)."""
        dest = self.local / rel
        if dest.exists() and not fresh:
            return True
        dl = getattr(self._tls, "dl", None)
        with _storage(f"{self.url}/{rel}"):
            if dl is None:
                from streaming.base.storage.download import CloudDownloader

                dl = self._tls.dl = CloudDownloader.get(self.url)
            tmp = dest.parent / f".{dest.name}.download"
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
            try:
                dl.download(f"{self.url}/{rel}", str(tmp))
            except Exception as e:
                if missing_ok and _not_found(e):
                    return False
                raise
            os.replace(tmp, dest)
        return True

    def download_many(self, rels: Iterable[str], *, fresh: bool = False, missing_ok: bool = False) -> None:
        rels = list(rels)
        if len(rels) <= 1:
            for r in rels:
                self.download(r, fresh=fresh, missing_ok=missing_ok)
            return
        with ThreadPoolExecutor(min(_THREADS, len(rels))) as pool:
            list(pool.map(lambda r: self.download(r, fresh=fresh, missing_ok=missing_ok), rels))


def _not_found(e: BaseException) -> bool:
    resp = getattr(e, "response", None)
    code = str(resp.get("Error", {}).get("Code", "")) if isinstance(resp, dict) else ""
    return code in ("404", "NoSuchKey") or isinstance(e, FileNotFoundError) or "not found" in str(e).lower()


_STORES: dict[tuple[str, str], Store] = {}


def store(url: str, local: str | Path) -> Store:
    """One Store per (url, local) and process: uploaders and downloaders are reused across units."""
    key = (url.rstrip("/"), str(local))
    if key not in _STORES:
        _STORES[key] = Store(*key)
    return _STORES[key]
