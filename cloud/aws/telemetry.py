"""Device telemetry in S3, as the IoT rule of ``infra/telemetry.yaml`` writes it, read back for the rollout gates.

The rule stores each message published on ``dt/intents/<thing>/telemetry`` (``telemetry`` windows, ``drift_alert``,
``samples``, ``shadow``: :mod:`edge_runtime.service.telemetry`) unchanged, one object per message::

    s3://<bucket>/[<prefix>/]slm-intents/telemetry/<thing>/<yyyy>/<MM>/<dd>/<received ms>-<uuid>.json

:func:`load_s3_telemetry` lists the objects of some things (a thing group's, from the rollout backend) received
since a time, and returns their messages in the shape ``cloud.rollout.judge`` and ``cloud.shadow`` read::

    python -m cloud.aws.telemetry fetch s3://my-bucket/slm-intents/telemetry/ --thing pi-1 --since 2026-12-01T00:00 \\
        --out telemetry.jsonl
    python -m cloud.rollout promote --state rollout.json --telemetry-s3 s3://my-bucket/slm-intents/telemetry/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import AwsError

__all__ = ["KEY_TEMPLATE", "telemetry_keys", "load_s3_telemetry", "main"]

#: The rule's object key below ``slm-intents/`` (IoT substitution templates; infra/telemetry.yaml must match).
KEY_TEMPLATE = ("telemetry/${topic(3)}/${parse_time('yyyy/MM/dd', timestamp(), 'UTC')}/"
                "${timestamp()}-${newuuid()}.json")
#: Most objects read in one call: a day of 60 s windows from ~70 devices. A rollout judges one canary group.
MAX_OBJECTS = 100_000


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise AwsError(f"not an s3:// URI: {uri!r} (expected s3://<bucket>/<prefix>/slm-intents/telemetry/)")
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise AwsError(f"no bucket in {uri!r}")
    return bucket, key.strip("/")


def _days(since: float, until: float) -> list[str]:
    day = datetime.fromtimestamp(since, timezone.utc).date()
    last = datetime.fromtimestamp(until, timezone.utc).date()
    out = []
    while day <= last:
        out.append(day.strftime("%Y/%m/%d"))
        day += timedelta(days=1)
    return out


def _received_ms(key: str) -> int | None:
    head = key.rsplit("/", 1)[-1].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def telemetry_keys(s3: Any, uri: str, *, things: Sequence[str] | None = None, since: float | None = None,
                   now: float | None = None) -> tuple[str, list[str]]:
    """``(bucket, keys)`` of the telemetry objects under ``uri`` of ``things`` (None: all), received at or after
    ``since`` (epoch seconds; None: all), oldest first.

    A message is received after it is published, so no message with ``ts >= since`` is left out, also when a
    device delivers its spool late; what was published earlier but received later is filtered by its ``ts``.
    """
    from .clients import call

    bucket, root = _split(uri)
    prefixes: list[str] = []
    for thing in ([None] if things is None else list(things)):
        base = f"{root}/{thing}/" if thing is not None else f"{root}/"
        base = base.lstrip("/")
        if since is None:
            prefixes.append(base)
        elif thing is None:  # every thing: list the thing folders, then their days
            for folder in _folders(s3, bucket, base):
                prefixes += [f"{folder}{day}/" for day in _days(since, now or time.time())]
        else:
            prefixes += [f"{base}{day}/" for day in _days(since, now or time.time())]
    keys: list[str] = []
    for prefix in prefixes:
        request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        while True:
            page = call(s3.list_objects_v2, **request)
            for obj in page.get("Contents", []):
                received = _received_ms(obj["Key"])
                if since is None or (received is not None and received >= since * 1000):
                    keys.append(obj["Key"])
            if len(keys) > MAX_OBJECTS:
                raise AwsError(f"more than {MAX_OBJECTS} telemetry objects under s3://{bucket}/{prefix}: narrow "
                               "the things or the time window")
            if not page.get("IsTruncated"):
                break
            request["ContinuationToken"] = page["NextContinuationToken"]
    keys.sort(key=lambda k: (_received_ms(k) or 0, k))
    return bucket, keys


def _folders(s3: Any, bucket: str, prefix: str) -> list[str]:
    from .clients import call

    out: list[str] = []
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
    while True:
        page = call(s3.list_objects_v2, **request)
        out += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        if not page.get("IsTruncated"):
            return out
        request["ContinuationToken"] = page["NextContinuationToken"]


def _messages(body: bytes) -> Iterable[dict[str, Any]]:
    # one JSON object per object (the rule); JSON lines too (objects gathered by hand), unreadable lines skipped
    # like cloud.rollout.load_telemetry does
    for line in body.decode("utf-8", "replace").splitlines():
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(msg, dict) and "type" in msg:
            yield msg


def load_s3_telemetry(uri: str, *, things: Sequence[str] | None = None, since: float | None = None,
                      until: float | None = None, client: Any = None, region: str | None = None) -> list[dict[str, Any]]:
    """The messages under ``uri`` (see :func:`telemetry_keys`), with ``ts`` in ``[since, until]`` when given."""
    from .clients import call, make_client

    _split(uri)  # a bad URI is named before any AWS set-up
    s3 = client or make_client("s3", region=region)
    bucket, keys = telemetry_keys(s3, uri, things=things, since=since)
    out = []
    for key in keys:
        body = call(s3.get_object, Bucket=bucket, Key=key)["Body"].read()
        for msg in _messages(body):
            ts = float(msg.get("ts", 0) or 0)
            if (since is None or ts >= since) and (until is None or ts <= until):
                out.append(msg)
    return out


def _when(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give epoch seconds or an ISO 8601 time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud.aws.telemetry", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="write the telemetry messages of some things as JSON lines")
    f.add_argument("uri", help="s3://<bucket>/[<prefix>/]slm-intents/telemetry/")
    f.add_argument("--thing", action="append", default=None, help="a thing name (repeat; default: every thing)")
    f.add_argument("--since", type=_when, default=None, help="epoch seconds or ISO 8601 (UTC if no zone)")
    f.add_argument("--until", type=_when, default=None)
    f.add_argument("--region", default=None)
    f.add_argument("--out", default="-", help="JSON-lines file (default: stdout)")
    args = parser.parse_args(argv)
    try:
        messages = load_s3_telemetry(args.uri, things=args.thing, since=args.since, until=args.until,
                                     region=args.region)
    except AwsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    lines = "".join(json.dumps(m, ensure_ascii=False) + "\n" for m in messages)
    if args.out == "-":
        sys.stdout.write(lines)
    else:
        Path(args.out).write_text(lines, encoding="utf-8")
        print(json.dumps({"messages": len(messages), "out": args.out}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
