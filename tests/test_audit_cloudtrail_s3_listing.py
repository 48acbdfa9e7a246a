"""An S3 prefix is read while it is listed, page by page, not listed whole first.

An organisation trail's prefix holds millions of objects; collecting every key before
reading the first kept them all in memory. Against moto's S3 server on loopback, the
first object is handed out after one ListObjectsV2 call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agent.audit.cloudtrail import summarise
from agent.audit.cloudtrail_read import Source, iter_sources
from tests.support.cloudtrail import FAKE_KEY, FAKE_SECRET, event
from tests.support.moto_http import moto_http_server

# moto's backends live for the whole test process: a bucket of its own, so other tests'
# objects under another bucket named trail never show up in this listing.
BUCKET = "trail-listing"


@pytest.fixture()
def s3_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import boto3

    with moto_http_server() as url:
        for k, v in {
            "AWS_ENDPOINT_URL_S3": url,
            "AWS_ACCESS_KEY_ID": FAKE_KEY,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        boto3.setup_default_session()
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        for name in ("a", "b", "c"):
            doc = {"Records": [event(host="sts.amazonaws.com")]}
            s3.put_object(Bucket=BUCKET, Key=f"AWSLogs/{name}.json", Body=json.dumps(doc).encode())
        yield boto3.DEFAULT_SESSION


def _one_key_per_page(params: dict[str, Any], **_: Any) -> None:
    params["MaxKeys"] = 1  # S3 pages at 1000 keys; three objects need three pages here


def test_objects_are_handed_out_as_their_page_arrives(s3_env: Any) -> None:
    listings: list[str] = []
    s3_env.events.register("before-parameter-build.s3.ListObjectsV2", _one_key_per_page)
    s3_env.events.register("before-call.s3.ListObjectsV2", lambda **_: listings.append("list"))
    sources = iter_sources([f"s3://{BUCKET}/AWSLogs/"])
    first = next(sources)
    assert isinstance(first, Source) and first.name == f"s3://{BUCKET}/AWSLogs/a.json"
    assert len(listings) == 1  # one page, not the whole prefix
    rest = [s.name for s in sources if isinstance(s, Source)]
    assert rest == [f"s3://{BUCKET}/AWSLogs/b.json", f"s3://{BUCKET}/AWSLogs/c.json"]
    assert len(listings) >= 3
    summary = summarise([f"s3://{BUCKET}/AWSLogs/"])
    assert (summary.files_read, summary.global_calls, summary.errors) == (3, 3, [])
