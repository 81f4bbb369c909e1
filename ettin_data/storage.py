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

__all__ = ["SCHEMES", "is_remote", "is_url", "is_shard", "cache_root", "local_path", "storage_error", "Store", "store"]

SCHEMES = ("s3", "gs", "oci", "azure", "azure-dl", "hf", "dbfs", "alipan")
_SHARD = re.compile(r"shard\.\d+\.mds(\.[\w:]+)?$")
_THREADS = 16


def is_remote(path: str | os.PathLike[str]) -> bool:
    """True for object-store URLs (``s3://bucket/prefix``): a run reads or writes them through a workspace of
    local folders (``remote.py``). Anything else is a local path."""
    return urllib.parse.urlparse(str(path)).scheme in SCHEMES


def is_url(path: str | os.PathLike[str]) -> bool:
    """True for any URL (``scheme://...``: object stores, ``http://``, ``file://``), which an option that takes
    only a local path refuses rather than reading it as a folder named ``scheme:``."""
    return "://" in str(path) and bool(urllib.parse.urlparse(str(path)).scheme)


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

    # objects the driver manages itself (lock, dataset state): created only if absent, read, deleted

    def _sdk(self) -> tuple[str, Any]:
        """The store's own client for conditional creates and deletes: S3 (boto3; S3-compatible servers too) or
        GCS (google-cloud-storage). Other stores cannot lock: ConfigError."""
        up = self._up()
        if getattr(up, "s3", None) is not None:
            return "s3", up.s3
        gcs = getattr(up, "gcs_client", None)
        if gcs is not None and hasattr(gcs, "bucket"):
            return "gcs", gcs
        raise ConfigError(f"{self.url}: ettin-data locks an output and records its state with objects created only "
                          "if absent, which it does for s3:// (and S3-compatible servers) and gs://; write to one "
                          "of those or to a local folder")

    def _key(self, rel: str) -> tuple[str, str]:
        parsed = urllib.parse.urlparse(self.url)
        return parsed.netloc, "/".join(p for p in (parsed.path.strip("/"), rel) if p)

    def create(self, rel: str, data: bytes) -> bool:
        """Create object ``rel`` holding ``data`` only if it does not exist (atomically, in the store); False if
        it exists."""
        kind, sdk = self._sdk()
        bucket, key = self._key(rel)
        with _storage(f"{self.url}/{rel}"):
            try:
                if kind == "s3":
                    sdk.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                else:
                    sdk.bucket(bucket).blob(key).upload_from_string(data, if_generation_match=0)
            except Exception as e:
                if _precondition_failed(e):
                    return False
                raise
        return True

    def read(self, rel: str) -> bytes | None:
        """The bytes of object ``rel`` (None when absent)."""
        kind, sdk = self._sdk()
        bucket, key = self._key(rel)
        with _storage(f"{self.url}/{rel}"):
            try:
                if kind == "s3":
                    return sdk.get_object(Bucket=bucket, Key=key)["Body"].read()
                return sdk.bucket(bucket).blob(key).download_as_bytes()
            except Exception as e:
                if _not_found(e):
                    return None
                raise

    def delete(self, rel: str) -> None:
        """Delete object ``rel`` (absent: nothing to do)."""
        kind, sdk = self._sdk()
        bucket, key = self._key(rel)
        with _storage(f"{self.url}/{rel}"):
            try:
                if kind == "s3":
                    sdk.delete_object(Bucket=bucket, Key=key)
                else:
                    sdk.bucket(bucket).blob(key).delete()
            except Exception as e:
                if not _not_found(e):
                    raise

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


def _precondition_failed(e: BaseException) -> bool:
    resp = getattr(e, "response", None)
    code = str(resp.get("Error", {}).get("Code", "")) if isinstance(resp, dict) else ""
    return code in ("PreconditionFailed", "412") or type(e).__name__ == "PreconditionFailed"


def _not_found(e: BaseException) -> bool:
    resp = getattr(e, "response", None)
    code = str(resp.get("Error", {}).get("Code", "")) if isinstance(resp, dict) else ""
    return (code in ("404", "NoSuchKey") or isinstance(e, FileNotFoundError) or "not found" in str(e).lower()
            or type(e).__name__ in ("NotFound", "NoSuchKey"))


_STORES: dict[tuple[str, str], Store] = {}


def store(url: str, local: str | Path) -> Store:
    """One Store per (url, local) and process: uploaders and downloaders are reused across units."""
    key = (url.rstrip("/"), str(local))
    if key not in _STORES:
        _STORES[key] = Store(*key)
    return _STORES[key]
