"""boto3 access in one place: imported lazily, clients per region, AWS errors turned into clear messages.

The region comes from ``--region``, else ``AWS_REGION``, else botocore's chain (``AWS_DEFAULT_REGION``, the
profile's ``region``). botocore itself reads only ``AWS_DEFAULT_REGION`` (``botocore/configprovider.py``);
``AWS_REGION`` is what the AWS CLI v2, the other SDKs and SageMaker jobs set, and takes precedence over
``AWS_DEFAULT_REGION`` there, so it does here too.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from .errors import AwsCallFailed, DependencyMissing

__all__ = ["boto3_module", "make_session", "make_client", "call", "error_code", "region_from_env", "AWS_EXTRA"]

AWS_EXTRA = "pip install 'slm-intents[aws]'"
#: botocore's "standard" retry mode (exponential backoff with jitter, retries throttling and transient errors,
#: a client-side retry quota); 5 attempts in all instead of its default 3, for long pipeline / deployment polls.
#: https://docs.aws.amazon.com/boto3/latest/guide/retries.html
RETRIES = {"mode": "standard", "total_max_attempts": 5}


def boto3_module() -> Any:
    """``import boto3``, or :class:`DependencyMissing` naming the extra."""
    try:
        import boto3
    except ImportError:
        raise DependencyMissing(f"boto3 is not installed: {AWS_EXTRA}") from None
    return boto3


def region_from_env(region: str | None = None) -> str | None:
    """``region``, else ``AWS_REGION``, else None (botocore's chain decides)."""
    return region or os.environ.get("AWS_REGION", "").strip() or None


def make_session(region: str | None = None, profile: str | None = None) -> Any:
    """A ``boto3.Session``; region (see the module docstring) and profile fall back to the AWS configuration."""
    boto3 = boto3_module()
    region = region_from_env(region)
    return boto3.Session(region_name=region, profile_name=profile) if profile else boto3.Session(region_name=region)


def make_client(service: str, *, region: str | None = None, session: Any = None) -> Any:
    """A boto3 client with the standard retry mode (:data:`RETRIES`); a missing region is an error here."""
    from botocore.config import Config

    region = region_from_env(region)
    session = session or make_session(region)
    resolved = region or session.region_name
    if not resolved:
        raise AwsCallFailed(f"no AWS region for {service}: pass --region or set AWS_REGION / AWS_DEFAULT_REGION",
                            operation=f"{service}.client")
    return session.client(service, region_name=resolved, config=Config(retries=dict(RETRIES)))


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for other exceptions)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def call(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Call a boto3 client method; botocore errors become :class:`AwsCallFailed` with the operation named.

    >>> call(s3.head_bucket, Bucket="b")  # doctest: +SKIP
    """
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

    operation = getattr(fn, "__name__", "call")
    service = getattr(getattr(fn, "__self__", None), "meta", None)
    where = f"{service.service_model.service_name}.{operation}" if service is not None else operation
    try:
        return fn(**kwargs)
    except NoCredentialsError:
        raise AwsCallFailed(f"{where}: no AWS credentials found (configure a profile, environment variables "
                            "or an instance role)", operation=where, code="NoCredentials") from None
    except NoRegionError:
        raise AwsCallFailed(f"{where}: no AWS region (pass --region or set AWS_REGION / AWS_DEFAULT_REGION)",
                            operation=where, code="NoRegion") from None
    except ClientError as exc:
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", str(exc))
        raise AwsCallFailed(f"{where} failed: {code}: {message}", operation=where, code=code) from None
    except BotoCoreError as exc:
        raise AwsCallFailed(f"{where} failed: {exc}", operation=where) from None
