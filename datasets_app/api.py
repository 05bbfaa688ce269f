"""REST endpoints for dataset recipes, versions and their files."""

from __future__ import annotations

from typing import Any

from django.core.files.storage import default_storage
from django.http import FileResponse
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response as ApiResponse
from rest_framework.views import APIView

from datasets_app import services
from datasets_app.models import Dataset, DatasetVersion
from datasets_app.selectors import dataset_get_for_user, datasets_for_user, version_get_for_user
from feedback.api import _user
from feedback.errors import NotFound
from feedback.selectors import campaign_get_for_user


class DatasetOutput(serializers.ModelSerializer[Dataset]):
    campaigns: serializers.PrimaryKeyRelatedField[Any] = serializers.PrimaryKeyRelatedField(
        many=True, read_only=True
    )

    class Meta:
        model = Dataset
        fields = [
            "id",
            "name",
            "slug",
            "campaigns",
            "format",
            "filters",
            "aggregation",
            "test_fraction",
            "seed",
            "created_at",
        ]


class DatasetInput(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200)
    campaigns = serializers.ListField(child=serializers.IntegerField(), min_length=1)
    format = serializers.ChoiceField(choices=Dataset.Format.choices)
    aggregation = serializers.ChoiceField(choices=Dataset.Aggregation.choices, default="majority")
    filters = serializers.DictField(required=False, default=dict)
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
        "counts": version.counts,
        "content_hash": version.content_hash,
        "files": files,
        "created_at": version.created_at.isoformat(),
        "finished_at": version.finished_at.isoformat() if version.finished_at else None,
    }


class DatasetListView(APIView):
    @extend_schema(responses=DatasetOutput(many=True))
    def get(self, request: Request) -> ApiResponse:
        return ApiResponse(DatasetOutput(datasets_for_user(user=_user(request)), many=True).data)

    @extend_schema(request=DatasetInput, responses={201: DatasetOutput})
    def post(self, request: Request) -> ApiResponse:
        user = _user(request)
        serializer = DatasetInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        campaigns = [campaign_get_for_user(user=user, campaign_id=c) for c in data.pop("campaigns")]
        dataset = services.dataset_create(owner=user, campaigns=campaigns, **data)
        return ApiResponse(DatasetOutput(dataset).data, status=status.HTTP_201_CREATED)


class VersionCreateView(APIView):
    @extend_schema(request=None, responses={202: dict}, summary="Build a new version")
    def post(self, request: Request, dataset_id: int) -> ApiResponse:
        user = _user(request)
        dataset = dataset_get_for_user(user=user, dataset_id=dataset_id)
        version = services.dataset_version_create(dataset=dataset, actor=user)
        version.refresh_from_db()
        return ApiResponse(version_payload(request, version), status=status.HTTP_202_ACCEPTED)


class VersionDetailView(APIView):
    @extend_schema(responses={200: dict}, summary="A version's status, counts and files")
    def get(self, request: Request, dataset_id: int, number: int) -> ApiResponse:
        version = version_get_for_user(user=_user(request), dataset_id=dataset_id, number=number)
        return ApiResponse(version_payload(request, version))


class VersionFileView(APIView):
    @extend_schema(responses={200: OpenApiResponse(description="The file, as an attachment")})
    def get(self, request: Request, dataset_id: int, number: int, path: str) -> FileResponse:
        version = version_get_for_user(user=_user(request), dataset_id=dataset_id, number=number)
        if version.status != DatasetVersion.Status.READY:
            raise NotFound(f"Version {number} is {version.status}; it has no files to download.")
        if path not in {f["path"] for f in version.files}:
            raise NotFound(f"Version {number} has no file {path!r}.")
        handle = default_storage.open(f"{version.storage_prefix}/{path}", "rb")
        return FileResponse(handle, as_attachment=True, filename=path.rsplit("/", 1)[-1])
