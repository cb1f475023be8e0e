"""S3 (and S3-compatible) access shared by summary.json and the Delta counts store.

One endpoint rule for every S3 client velocast makes: the standard ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL``, else MLflow's ``MLFLOW_S3_ENDPOINT_URL`` (one variable points MLflow's
artifacts, summary.json and the counts table at the same MinIO, moto or Ceph). Every client gets
connect and read timeouts of ``VELOCAST_DEPENDENCY_TIMEOUT_SECONDS`` and at most one retry, and a
failure that is not "does not exist" comes out as ``DependencyUnavailable("object store", …)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from velocast.config import redact
from velocast.errors import DependencyUnavailable

S3_SCHEMES = ("s3://", "s3a://")


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEMES)


def s3_endpoint() -> str | None:
    """The S3 endpoint of this environment; None means AWS itself."""
    return (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``."""
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"{uri}: expected s3://bucket/key")
    return bucket, key


def s3_client(timeout: float) -> Any:
    """A boto3 S3 client with bounded connect/read timeouts and one retry."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=timeout, read_timeout=timeout,
                    retries={"max_attempts": 2, "mode": "standard"})
    return boto3.client("s3", endpoint_url=s3_endpoint(), config=config)


def delta_storage_options(uri: str, timeout: float) -> dict[str, str]:
    """``storage_options`` of a Delta table at ``uri`` (empty for a local path).

    Commits on S3 are made safe by S3 conditional writes (``If-None-Match: *`` on the log entry:
    ``conditional_put=etag``): two writers that race for the same table version cannot both win,
    the loser re-reads and retries. AWS S3 supports them since 2024, MinIO and Cloudflare R2 too;
    a store without them is not safe for concurrent writers (``AWS_S3_ALLOW_UNSAFE_RENAME`` is
    never set by velocast).
    """
    if not is_s3(uri):
        return {}
    seconds = max(int(timeout), 1)
    # a request may take longer than a connect (a large data file) but a dead endpoint fails in seconds
    options = {"conditional_put": "etag", "timeout": f"{max(seconds * 6, 30)}s", "connect_timeout": f"{seconds}s",
               "max_retries": "2", "retry_timeout": f"{seconds * 2}s"}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if os.environ.get(name):
            options[name] = os.environ[name]
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["AWS_REGION"] = region
    endpoint = s3_endpoint()
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    return options


def is_object_store_error(exc: BaseException) -> bool:
    """An error of the S3 client libraries (botocore, s3fs, aiohttp) or of the network."""
    if isinstance(exc, FileNotFoundError):
        return False
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return True
    return type(exc).__module__.startswith(("botocore", "aiobotocore", "s3fs", "aiohttp", "urllib3"))


@contextmanager
def object_store_calls(uri: str) -> Iterator[None]:
    """Failures of calls to the object store at ``uri`` (not "does not exist") as ``DependencyUnavailable``."""
    try:
        yield
    except FileNotFoundError:
        raise
    except DependencyUnavailable:
        raise
    except Exception as exc:
        if is_object_store_error(exc):
            raise DependencyUnavailable("object store", f"{redact(uri)}: {type(exc).__name__}: {exc}") from exc
        raise
