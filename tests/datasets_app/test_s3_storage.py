"""Version files in S3-compatible object storage (django-storages), against a real local S3
server (moto's, on 127.0.0.1): the build uploads every file, downloads redirect to a signed
URL that serves the file as an attachment, a failed build leaves no object behind."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.files.storage import storages

from datasets_app.models import DatasetVersion
from feedback.models import Item
from tests.datasets_app import factories as f

pytestmark = pytest.mark.django_db

BUCKET = "datasets-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = shutil.which("moto_server") or str(
        __import__("pathlib").Path(sys.executable).with_name("moto_server")
    )
    port = _free_port()
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3(settings: Any, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    settings.STORAGES = {
        **settings.STORAGES,
        "datasets": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": BUCKET,
                "endpoint_url": s3_endpoint,
                "region_name": "us-east-1",
                "location": "exports",
                "file_overwrite": False,
                "default_acl": None,
            },
        },
    }
    yield client
    for entry in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=entry["Key"])
    client.delete_bucket(Bucket=BUCKET)


def _keys(client: Any) -> set[str]:
    return {e["Key"] for e in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}


def test_a_version_is_stored_in_the_bucket_and_downloaded_through_a_signed_url(
    s3, api_for, engineer, django_capture_on_commit_callbacks
):
    assert storages["datasets"].__class__.__name__ == "S3Storage"
    campaign = f.campaign("pairwise", overlap=1, items=6)
    f.review_all(campaign, f.experts(1), f.prefer("Answer 1"))
    version = f.build(
        f.dataset(engineer, [campaign], "dpo"), engineer, django_capture_on_commit_callbacks
    )
    assert version.status == "ready", version.error
    assert _keys(s3) == {f"exports/{version.storage_prefix}/{e['path']}" for e in version.files}

    client = api_for(engineer)
    listed = client.get(f"/api/v1/datasets/{version.dataset_id}/versions/1/").json()
    for entry in listed["files"]:
        res = client.get(entry["url"])
        assert res.status_code == 302
        signed = res["Location"]
        assert signed.startswith("http://127.0.0.1:")
        assert "response-content-disposition=attachment" in signed
        with urllib.request.urlopen(signed, timeout=10) as download:
            body = download.read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"]


def test_a_failed_build_leaves_nothing_in_the_bucket(
    s3, engineer, django_capture_on_commit_callbacks
):
    campaign = f.campaign("pairwise", overlap=1, items=4)
    f.review_all(campaign, f.experts(1), f.prefer("Answer 1"))
    Item.objects.filter(pk=Item.objects.filter(campaign=campaign).last().pk).update(prompt=7)
    version = f.build(
        f.dataset(engineer, [campaign], "sft"), engineer, django_capture_on_commit_callbacks
    )
    assert version.status == DatasetVersion.Status.FAILED
    assert _keys(s3) == set()
