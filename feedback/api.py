"""REST endpoints of the core domain: campaigns and items."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response as ApiResponse
from rest_framework.views import APIView

from feedback import services
from feedback.errors import ValidationFailed
from feedback.models import Campaign, User
from feedback.selectors import campaign_get_for_user, campaigns_for_user


def _user(request: Request) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


class CampaignOutput(serializers.ModelSerializer[Campaign]):
    class Meta:
        model = Campaign
        fields = [
            "id",
            "name",
            "slug",
            "kind",
            "status",
            "instructions",
            "rubric",
            "overlap",
            "required_skills",
            "gold_rate",
            "requires_qualification",
            "pay",
            "acceptance",
            "lease_minutes",
            "generation_models",
            "created_at",
            "updated_at",
        ]


class CampaignInputSerializer(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200)
    slug = serializers.SlugField(max_length=100, required=False)
    kind = serializers.ChoiceField(choices=Campaign.Kind.choices)
    status = serializers.ChoiceField(choices=Campaign.Status.choices, default=Campaign.Status.DRAFT)
    instructions = serializers.CharField(required=False, allow_blank=True, default="")
    rubric = serializers.ListField(child=serializers.DictField(), required=False, default=list)
    overlap = serializers.IntegerField(min_value=1, max_value=50, default=1)
    required_skills = serializers.ListField(
        child=serializers.CharField(max_length=64), default=list
    )
    gold_rate = serializers.FloatField(min_value=0, max_value=0.5, default=0.0)
    requires_qualification = serializers.BooleanField(default=False)
    pay = serializers.DictField(required=False, default=dict)
    acceptance = serializers.ChoiceField(choices=Campaign.Acceptance.choices, default="auto")
    lease_minutes = serializers.IntegerField(min_value=1, max_value=24 * 60, default=30)
    generation_models = serializers.ListField(
        child=serializers.CharField(max_length=200), default=list
    )


class CampaignPatchSerializer(CampaignInputSerializer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, partial=True, **kwargs)


class CampaignListView(APIView):
    @extend_schema(responses=CampaignOutput(many=True), summary="Campaigns you can see")
    def get(self, request: Request) -> ApiResponse:
        campaigns = campaigns_for_user(user=_user(request)).order_by("-created_at", "-id")
        return ApiResponse(CampaignOutput(campaigns, many=True).data)

    @extend_schema(request=CampaignInputSerializer, responses={201: CampaignOutput})
    def post(self, request: Request) -> ApiResponse:
        serializer = CampaignInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        campaign = services.campaign_create(
            actor=_user(request), data=services.CampaignInput(**serializer.validated_data)
        )
        return ApiResponse(CampaignOutput(campaign).data, status=status.HTTP_201_CREATED)


class CampaignDetailView(APIView):
    @extend_schema(responses=CampaignOutput)
    def get(self, request: Request, campaign_id: int) -> ApiResponse:
        campaign = campaign_get_for_user(user=_user(request), campaign_id=campaign_id)
        return ApiResponse(CampaignOutput(campaign).data)

    @extend_schema(request=CampaignPatchSerializer, responses=CampaignOutput)
    def patch(self, request: Request, campaign_id: int) -> ApiResponse:
        campaign = campaign_get_for_user(user=_user(request), campaign_id=campaign_id)
        serializer = CampaignPatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        changes = {k: v for k, v in serializer.validated_data.items() if k in request.data}
        if "slug" in changes or "kind" in changes:
            raise ValidationFailed(
                "slug and kind are fixed once a campaign exists.",
                fields={k: ["cannot be changed"] for k in ("slug", "kind") if k in changes},
            )
        campaign = services.campaign_update(
            actor=_user(request), campaign=campaign, changes=changes
        )
        return ApiResponse(CampaignOutput(campaign).data)


class ItemsAddedOutput(serializers.Serializer[Any]):
    created = serializers.IntegerField()
    item_ids = serializers.ListField(child=serializers.IntegerField())
    duplicates = serializers.ListField(child=serializers.DictField())


class ItemsCreateView(APIView):
    @extend_schema(
        request={"application/json": {"type": "array", "items": {"type": "object"}}},
        responses={201: ItemsAddedOutput},
        summary="Add a batch of items, all or nothing",
        description=(
            "A JSON list of items in the documented item format. If any item is invalid "
            "nothing is stored and the 400 names every bad index and field "
            "(`items[3].responses[1].text`). Duplicates (same external_id or content) are "
            "skipped and reported."
        ),
    )
    def post(self, request: Request, campaign_id: int) -> ApiResponse:
        from django.conf import settings

        user = _user(request)
        campaign = campaign_get_for_user(user=user, campaign_id=campaign_id)
        raw = request.data
        if isinstance(raw, list) and len(raw) > settings.ITEMS_BATCH_MAX:
            raise ValidationFailed(
                f"A batch holds at most {settings.ITEMS_BATCH_MAX} items; got {len(raw)}. "
                "Send several batches or upload a file to imports/.",
                fields={"items": ["too many items"]},
            )
        parsed = services.items_parse_batch(campaign=campaign, raw_items=raw)
        added = services.items_add(actor=user, campaign=campaign, items=parsed)
        return ApiResponse(
            {
                "created": len(added.created),
                "item_ids": added.created,
                "duplicates": added.duplicates,
            },
            status=status.HTTP_201_CREATED,
        )
