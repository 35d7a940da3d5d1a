"""boto3 clients of cloud.aws: the standard retry mode, proved at the HTTP layer (nothing leaves the process)."""

from __future__ import annotations

import json

from tests.cloud.aws.conftest import REGION


class _Raw:
    """What botocore reads an HTTP response body from (``AWSResponse.raw.stream()``)."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_):
        yield self._body


def _answer_with(statuses, sent, code="ThrottlingException"):
    """A ``before-send`` handler: answers each attempt with the next status, recording the attempt.

    ``before-send`` runs inside botocore's retry loop (a Stubber answers before it, so it cannot show retries).
    """
    from botocore.awsrequest import AWSResponse

    def handler(request, **_):
        header = request.headers.get("amz-sdk-request", b"")
        sent.append(header.decode() if isinstance(header, bytes) else header)
        status = statuses[min(len(sent), len(statuses)) - 1]
        body = (b'{"ModelPackageSummaryList": []}' if status == 200 else
                json.dumps({"__type": code, "message": "Rate exceeded"}).encode())
        return AWSResponse(request.url, status, {"Content-Type": "application/x-amz-json-1.1"}, _Raw(body))
    return handler


def test_clients_retry_throttling_in_standard_mode(aws_env, monkeypatch):
    from cloud.aws.clients import make_client

    # Given a client from make_client, and a service that throttles twice, then answers; TooManyRequestsException
    # is retried by the standard mode and not by botocore's default legacy mode (its _retry.json lists
    # Throttling, ThrottlingException, ThrottledException, RequestThrottledException, ...)
    monkeypatch.setattr("botocore.endpoint.time.sleep", lambda s: None)  # the backoff's sleeps, not its decisions
    sm = make_client("sagemaker", region=REGION)
    sent: list = []
    sm.meta.events.register("before-send.sagemaker.ListModelPackages",
                            _answer_with([400, 400, 200], sent, code="TooManyRequestsException"))
    # When one call is made, Then it succeeds on the third attempt (the standard mode numbers its attempts)
    assert sm.list_model_packages()["ModelPackageSummaryList"] == []
    assert [h.split(";")[0] for h in sent] == ["attempt=1", "attempt=2", "attempt=3"]
    assert sm.meta.config.retries == {"mode": "standard", "total_max_attempts": 5}


def test_a_call_that_stays_throttled_fails_after_five_attempts_with_a_clear_error(aws_env, monkeypatch):
    import pytest

    from cloud.aws.clients import call, make_client
    from cloud.aws.errors import AwsCallFailed

    monkeypatch.setattr("botocore.endpoint.time.sleep", lambda s: None)
    sm = make_client("sagemaker", region=REGION)
    sent: list = []
    sm.meta.events.register("before-send.sagemaker.ListModelPackages", _answer_with([400], sent))
    with pytest.raises(AwsCallFailed, match="ThrottlingException") as err:
        call(sm.list_model_packages)
    assert len(sent) == 5 and err.value.code == "ThrottlingException"
