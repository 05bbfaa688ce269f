"""REST endpoints for dataset recipes, their versions, files and diffs."""

from __future__ import annotations

import mimetypes
from typing import Any

from django.http import FileResponse, HttpResponseRedirect
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response as ApiResponse
from rest_framework.views import APIView

from datasets_app import services
from datasets_app.models import Dataset, DatasetVersion
from datasets_app.recipe import AGGREGATIONS, FORMATS
from datasets_app.selectors import dataset_get_for_user, datasets_for_user, version_get_for_user
from feedback.api import KnownFieldsOnly, TextField, _user
from feedback.errors import NotFound
from feedback.selectors import campaign_get_for_user

CONTENT_TYPES = {
    ".parquet": "application/vnd.apache.parquet",
    ".jsonl": "application/jsonl",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
}


class DatasetOutput(serializers.ModelSerializer[Dataset]):
    campaigns: serializers.PrimaryKeyRelatedField[Any] = serializers.PrimaryKeyRelatedField(
        many=True, read_only=True
    )
    # Plain strings in the schema: "format" and "status" enums of other apps would collide.
    format = serializers.CharField(read_only=True)
    aggregation = serializers.CharField(read_only=True)

    class Meta:
        model = Dataset
        fields = [
            "id",
            "name",
            "slug",
            "description",
            "campaigns",
            "format",
            "filters",
            "aggregation",
            "test_fraction",
            "seed",
            "created_at",
        ]


class DatasetInput(KnownFieldsOnly):
    what = "dataset"
    # What GET gives and a recipe copied from it carries back: ignored.
    also_taken = frozenset(DatasetOutput.Meta.fields)
    name = TextField(max_length=200)
    description = TextField(required=False, allow_blank=True, default="")
    campaigns = serializers.ListField(child=serializers.IntegerField(), min_length=1)
    # Checked by the service (400 naming the field); plain strings keep the schema's enum
    # names free of collisions with other apps' "format" fields.
    format = TextField(help_text=f"One of: {', '.join(FORMATS)}.")
    aggregation = TextField(default="majority", help_text=f"One of: {', '.join(AGGREGATIONS)}.")
    filters = serializers.DictField(
        required=False,
        default=dict,
        help_text=(
            "accepted_only (default true), date_from, date_to (ISO dates), exclude_flagged "
            "(true or a list of flags), include_gold (default false), min_agreement (0-1), "
            "min_votes, min_trust, min_rating."
        ),
    )
    test_fraction = serializers.FloatField(min_value=0, max_value=0.9, default=0.1)
    seed = serializers.IntegerField(default=0)


def version_payload(request: Request, version: DatasetVersion) -> dict[str, Any]:
    dataset = version.dataset
    files = []
    for f in version.files:
        url = reverse(
            "api-dataset-file",
            kwargs={"dataset_id": dataset.pk, "number": version.number, "path": f["path"]},
        )
        files.append({**f, "url": request.build_absolute_uri(url)})
    return {
        "dataset": dataset.pk,
        "number": version.number,
        "status": version.status,
        "error": version.error,
        "recipe": version.recipe,
        "counts": version.counts,
        "content_hash": version.content_hash,
        "files": files,
        "attempts": version.attempts,
        "created_at": version.created_at.isoformat(),
        "started_at": version.started_at.isoformat() if version.started_at else None,
        "finished_at": version.finished_at.isoformat() if version.finished_at else None,
    }


class DatasetListView(APIView):
    @extend_schema(responses=DatasetOutput(many=True), summary="Dataset recipes")
    def get(self, request: Request) -> ApiResponse:
        return ApiResponse(DatasetOutput(datasets_for_user(user=_user(request)), many=True).data)

    @extend_schema(request=DatasetInput, responses={201: DatasetOutput}, summary="Save a recipe")
    def post(self, request: Request) -> ApiResponse:
        user = _user(request)
        serializer = DatasetInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        campaigns = [campaign_get_for_user(user=user, campaign_id=c) for c in data.pop("campaigns")]
        dataset = services.dataset_create(owner=user, campaigns=campaigns, **data)
        return ApiResponse(DatasetOutput(dataset).data, status=status.HTTP_201_CREATED)


class DatasetDetailView(APIView):
    @extend_schema(responses={200: dict}, summary="A recipe and its versions")
    def get(self, request: Request, dataset_id: int) -> ApiResponse:
        dataset = dataset_get_for_user(user=_user(request), dataset_id=dataset_id)
        return ApiResponse(
            {
                **DatasetOutput(dataset).data,
                "versions": [version_payload(request, v) for v in dataset.versions.all()],
            }
        )


class VersionListView(APIView):
    @extend_schema(
        responses={200: dict},
        summary="A dataset's versions, newest first",
        operation_id="datasets_versions_list",
    )
    def get(self, request: Request, dataset_id: int) -> ApiResponse:
        dataset = dataset_get_for_user(user=_user(request), dataset_id=dataset_id)
        return ApiResponse([version_payload(request, v) for v in dataset.versions.all()])

    @extend_schema(
        request=None,
        responses={202: dict},
        summary="Build a new version",
        description=(
            "Numbers a new version and queues its build; poll the version for its status "
            "(queued, building, ready or failed with the reason)."
        ),
    )
    def post(self, request: Request, dataset_id: int) -> ApiResponse:
        user = _user(request)
        dataset = dataset_get_for_user(user=user, dataset_id=dataset_id)
        version = services.dataset_version_create(dataset=dataset, actor=user)
        version.refresh_from_db()
        return ApiResponse(version_payload(request, version), status=status.HTTP_202_ACCEPTED)


class VersionDetailView(APIView):
    @extend_schema(
        responses={200: dict},
        summary="A version's status, counts (per split, per drop rule) and files",
        operation_id="datasets_version_retrieve",
    )
    def get(self, request: Request, dataset_id: int, number: int) -> ApiResponse:
        version = version_get_for_user(user=_user(request), dataset_id=dataset_id, number=number)
        return ApiResponse(version_payload(request, version))


class VersionFileView(APIView):
    @extend_schema(
        responses={
            200: OpenApiResponse(description="The file, streamed as an attachment"),
            302: OpenApiResponse(description="Object storage: a signed URL that serves it"),
        },
        summary="Download one file of a ready version",
    )
    def get(self, request: Request, dataset_id: int, number: int, path: str) -> FileResponse:
        version = version_get_for_user(user=_user(request), dataset_id=dataset_id, number=number)
        if version.status != DatasetVersion.Status.READY:
            raise NotFound(f"Version {number} is {version.status}; it has no files to download.")
        entry = next((f for f in version.files if f["path"] == path), None)
        if entry is None:
            raise NotFound(f"Version {number} has no file {path!r}.")
        filename = f"{version.dataset.slug}-v{version.number}-{path.replace('/', '-')}"
        signed = services.signed_download_url(version=version, path=path, filename=filename)
        if signed is not None:
            return HttpResponseRedirect(signed)  # type: ignore[return-value]
        handle = services.dataset_storage().open(f"{version.storage_prefix}/{path}", "rb")
        suffix = "." + path.rsplit(".", 1)[-1]
        response = FileResponse(
            handle,
            as_attachment=True,
            filename=filename,
            content_type=CONTENT_TYPES.get(suffix)
            or mimetypes.guess_type(path)[0]
            or "application/octet-stream",
        )
        response.block_size = 1 << 16
        response["Content-Length"] = str(entry["size"])
        response["X-Content-SHA256"] = entry["sha256"]
        return response


class VersionDiffView(APIView):
    @extend_schema(
        responses={200: dict},
        summary="Rows added, removed and changed from version n to version m",
    )
    def get(self, request: Request, dataset_id: int, number: int, other: int) -> ApiResponse:
        user = _user(request)
        base = version_get_for_user(user=user, dataset_id=dataset_id, number=number)
        target = version_get_for_user(user=user, dataset_id=dataset_id, number=other)
        return ApiResponse(services.version_diff(base=base, other=target))
