"""The S3 store: contract 2's key layout in a bucket (``--store s3://bucket`` or ``s3://bucket/prefix``).

``Store.at("s3://bucket")`` returns an :class:`S3Store`. Its layout methods return ``s3://`` URIs with the
same keys the local store uses (``raw()``, ``processed()``, ``models(run)``, ``evaluation(run)``,
``edge(version)`` ...), and it moves whole directories between a local store and the bucket::

    store = S3Store.from_uri("s3://my-bucket")
    store.edge("3")                       # 's3://my-bucket/slm-intents/edge/3'
    store.upload_dir(".store/slm-intents/edge/3", store.edge("3"))
    store.download_dir(store.processed(), "work/processed")

The SQLite registry needs a local file, so ``registry_db`` raises ``NotImplementedError``; on AWS the
registry is the SageMaker Model Registry (``--backend sagemaker``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from ..store import PROJECT
from .clients import call, error_code, make_client
from .errors import AwsCallFailed

__all__ = ["S3Store", "split_s3_uri"]


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``"s3://b/k/x"`` -> ``("b", "k/x")``; raise ``ValueError`` for anything that is not an s3:// URI."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"s3 URI without a bucket: {uri!r}")
    return bucket, key


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


@dataclass(frozen=True)
class S3Store:
    """The store in ``s3://<bucket>/<prefix>/<project>/...``.

    Fields:
        bucket: the bucket name.
        prefix: an optional key prefix above the project folder (``s3://bucket/team-a`` -> ``team-a``).
        project: the project folder (``slm-intents``, as in the local store).
        region: the bucket's region for the client this store creates (default: the AWS config chain).
        client: a boto3 S3 client to use instead (tests pass a moto or stubbed one).
    """

    bucket: str
    prefix: str = ""
    project: str = PROJECT
    region: str | None = None
    client: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> "S3Store":
        bucket, key = split_s3_uri(uri)
        return cls(bucket=bucket, prefix=key.strip("/"), **kwargs)

    # layout (contract 2) ----------------------------------------------------------------------------------
    @property
    def root(self) -> str:
        return f"s3://{_join(self.bucket, self.prefix)}"

    @property
    def uri(self) -> str:
        return self.root

    @property
    def base(self) -> str:
        return f"{self.root}/{self.project}"

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` under the project folder: ``key("edge", "3")`` -> ``slm-intents/edge/3``."""
        return _join(self.prefix, self.project, *parts)

    def uri_of(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def raw(self) -> str:
        return self.uri_of("raw")

    def processed(self) -> str:
        return self.uri_of("processed")

    def validation(self, run: str) -> str:
        return self.uri_of("validation", run)

    def models(self, run: str) -> str:
        return self.uri_of("models", run)

    def evaluation(self, run: str) -> str:
        return self.uri_of("evaluation", run)

    def edge(self, version: str) -> str:
        return self.uri_of("edge", str(version))

    def cache(self) -> str:
        return self.uri_of("cache")

    def code(self, digest: str) -> str:
        """Where the SageMaker jobs' source bundle of one code version lives."""
        return self.uri_of("code", digest)

    @property
    def registry_db(self) -> Path:
        raise NotImplementedError(
            f"the local SQLite registry needs a local store, not {self.root}; "
            "use the SageMaker Model Registry (--backend sagemaker) with an S3 store"
        )

    @property
    def last_run(self) -> str:
        return f"{self.root}/last-run.json"

    # I/O ----------------------------------------------------------------------------------------------------
    def _s3(self) -> Any:
        if self.client is None:
            object.__setattr__(self, "client", make_client("s3", region=self.region))
        return self.client

    @staticmethod
    def _locate(uri: str) -> tuple[str, str]:
        return split_s3_uri(uri)

    def upload_file(self, path: str | os.PathLike[str], uri: str) -> str:
        bucket, key = self._locate(uri)
        call(self._s3().upload_file, Filename=os.fspath(path), Bucket=bucket, Key=key)
        return uri

    def put_bytes(self, uri: str, body: bytes, content_type: str = "application/octet-stream") -> str:
        bucket, key = self._locate(uri)
        call(self._s3().put_object, Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        return uri

    def upload_dir(self, local_dir: str | os.PathLike[str], uri: str) -> list[str]:
        """Upload every file under ``local_dir`` to ``uri/<relative path>``; returns the object URIs."""
        root = Path(local_dir)
        if not root.is_dir():
            raise AwsCallFailed(f"cannot upload {root}: not a directory", operation="s3.upload_dir")
        uploaded = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            uploaded.append(self.upload_file(path, f"{uri.rstrip('/')}/{rel}"))
        return uploaded

    def iter_keys(self, uri: str) -> Iterator[str]:
        """Keys under the prefix ``uri`` (a "directory": ``uri/``), in S3's order."""
        bucket, key = self._locate(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        paginator = self._s3().get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield obj["Key"]
        except Exception as exc:  # botocore errors of a paginator surface here, not through call()
            if error_code(exc):
                raise AwsCallFailed(f"s3.list_objects_v2 {uri} failed: {error_code(exc)}: {exc}",
                                    operation="s3.list_objects_v2", code=error_code(exc)) from None
            raise

    def list(self, uri: str) -> list[str]:
        """URIs of the objects under the prefix ``uri``."""
        bucket, _ = self._locate(uri)
        return [f"s3://{bucket}/{k}" for k in self.iter_keys(uri)]

    def exists(self, uri: str) -> bool:
        bucket, key = self._locate(uri)
        try:
            call(self._s3().head_object, Bucket=bucket, Key=key)
        except AwsCallFailed as exc:
            if exc.code in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def download_file(self, uri: str, path: str | os.PathLike[str]) -> Path:
        bucket, key = self._locate(uri)
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        call(self._s3().download_file, Bucket=bucket, Key=key, Filename=os.fspath(dest))
        return dest

    def download_dir(self, uri: str, local_dir: str | os.PathLike[str]) -> list[Path]:
        """Download every object under ``uri/`` into ``local_dir`` (relative paths kept)."""
        bucket, key = self._locate(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        out = []
        for k in self.iter_keys(uri):
            rel = PurePosixPath(k[len(prefix):])
            if not rel.parts or ".." in rel.parts or k.endswith("/"):
                continue  # "directory" placeholder objects and keys that would escape local_dir
            out.append(self.download_file(f"s3://{bucket}/{k}", Path(local_dir, *rel.parts)))
        return out

    def read_json(self, uri: str) -> Any:
        bucket, key = self._locate(uri)
        body = call(self._s3().get_object, Bucket=bucket, Key=key)["Body"].read()
        try:
            return json.loads(body)
        except ValueError as exc:
            raise AwsCallFailed(f"{uri} is not JSON: {exc}", operation="s3.get_object") from None

    def write_json(self, uri: str, data: Any) -> str:
        bucket, key = self._locate(uri)
        body = (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()
        call(self._s3().put_object, Bucket=bucket, Key=key, Body=body, ContentType="application/json")
        return uri

    def publish_local(self, local: Any, *, include_registry: bool = True) -> list[str]:
        """Upload a local :class:`~cloud.store.Store`'s project folder (and ``last-run.json``) to this store.

        The step cache is left out (its records hold local paths); ``registry.sqlite`` goes along unless
        ``include_registry`` is false.
        """
        base = Path(local.base)
        uploaded = []
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            rel = path.relative_to(base)
            if rel.parts[0] == "cache" or (rel.name == "registry.sqlite" and not include_registry):
                continue
            if rel.name.endswith((".tmp", "-journal", "-wal", "-shm")):
                continue
            uploaded.append(self.upload_file(path, self.uri_of(rel.as_posix())))
        last_run = Path(local.last_run)
        if last_run.is_file():
            uploaded.append(self.upload_file(last_run, self.last_run))
        return uploaded
