"""REST endpoints of the work: claim the next item, submit, skip, heartbeat."""

from __future__ import annotations

from typing import Any

from django.http import FileResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response as ApiResponse
from rest_framework.views import APIView

from feedback.api import BoolField, KnownFieldsOnly, TextField, _user
from feedback.selectors import campaign_get_for_user
from reviews import services
from reviews.models import Assignment, Review
from reviews.selectors import assignment_payload, image_get_for_user


class AssignmentPayloadOutput(serializers.Serializer[Any]):
    assignment = serializers.DictField()
    item = serializers.DictField()


class ReviewOutput(serializers.ModelSerializer[Review]):
    """The submit's answer, as documented; review_output builds the same body (a test holds
    the two together) without a model serializer's cost on every submit."""

    assignment = serializers.IntegerField(source="assignment_id")
    item = serializers.IntegerField(source="item_id")
    chosen = serializers.IntegerField(source="chosen_id", allow_null=True)
    correction_response = serializers.IntegerField(source="correction_response_id", allow_null=True)

    class Meta:
        model = Review
        fields = [
            "id",
            "assignment",
            "item",
            "ratings",
            "chosen",
            "strength",
            "ranking",
            "correction_response",
            "correction_text",
            "rationale",
            "flags",
            "active_seconds",
            "verdict",
            "created_at",
        ]


_DATETIME = serializers.DateTimeField()  # written as the serializer writes one


def review_output(review: Review) -> dict[str, Any]:
    return {
        "id": review.pk,
        "assignment": review.assignment_id,
        "item": review.item_id,
        "ratings": review.ratings,
        "chosen": review.chosen_id,
        "strength": review.strength,
        "ranking": review.ranking,
        "correction_response": review.correction_response_id,
        "correction_text": review.correction_text,
        "rationale": review.rationale,
        "flags": review.flags,
        "active_seconds": review.active_seconds,
        "verdict": review.verdict,
        "created_at": _DATETIME.to_representation(review.created_at),
    }


class SkipInput(KnownFieldsOnly):
    what = "skip"
    reason = serializers.ChoiceField(
        choices=sorted(services.SKIP_REASONS),
        error_messages={
            "invalid_choice": '"{input}" is not a skip reason; one of: '
            + ", ".join(sorted(services.SKIP_REASONS))
            + ' (with "other", say why in `note`).',
            "required": "is required: one of "
            + ", ".join(sorted(services.SKIP_REASONS))
            + ' (with "other", say why in `note`).',
            "null": "must be one of "
            + ", ".join(sorted(services.SKIP_REASONS))
            + ', not null (with "other", say why in `note`).',
        },
    )
    # Kept as typed, as the review page keeps it, so a repeat of a skip made there compares
    # equal (a note differing from the stored one is a 409).
    note = TextField(
        required=False,
        allow_blank=True,
        default="",
        max_length=services.MAX_SKIP_NOTE,
        trim_whitespace=False,
    )


class HeartbeatInput(KnownFieldsOnly):
    what = "heartbeat"
    active = BoolField(default=True)


class NextView(APIView):
    @extend_schema(
        request=None,
        responses={
            200: AssignmentPayloadOutput,
            204: OpenApiResponse(description="Nothing left for you"),
        },
        summary="Claim the next item",
    )
    def post(self, request: Request, campaign_id: int) -> ApiResponse:
        user = _user(request)
        campaign = campaign_get_for_user(user=user, campaign_id=campaign_id)
        claimed = services.assignment_claim_shown(campaign=campaign, expert=user)
        if claimed is None:
            return ApiResponse(status=status.HTTP_204_NO_CONTENT)
        assignment, shown = claimed
        return ApiResponse(assignment_payload(assignment=assignment, shown=shown))


class SubmitView(APIView):
    @extend_schema(
        request={"application/json": {"type": "object"}},
        responses={201: ReviewOutput, 200: ReviewOutput},
        summary="Submit a review (idempotent per assignment)",
        description=(
            "201 with the stored review. A repeat with the same judgement (active_seconds and"
            " pasted_chars aside) answers 200 with that review; a repeat with another judgement"
            " answers 409 `already_submitted`, naming the fields that differ, and changes"
            " nothing. 409 `lease_expired` / `assignment_expired` / `assignment_skipped` when"
            " the claim is no longer live; 400 naming each bad field."
        ),
    )
    def post(self, request: Request, assignment_id: int) -> ApiResponse:
        review, created = services.review_submit(
            assignment_id=assignment_id, expert=_user(request), body=request.data
        )
        return ApiResponse(
            review_output(review),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class SkipView(APIView):
    @extend_schema(
        request=SkipInput,
        responses={200: dict},
        summary="Skip an item with a reason",
        description=(
            "409 when the claim is no longer live; 503 `queue_busy` with Retry-After while a"
            " longer write (an admin's change of the campaign's overlap) holds the item's queue"
            " row: nothing was saved, skip again."
        ),
    )
    def post(self, request: Request, assignment_id: int) -> ApiResponse:
        serializer = SkipInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        assignment = services.assignment_skip(
            assignment_id=assignment_id, expert=_user(request), **serializer.validated_data
        )
        return ApiResponse({"id": assignment.pk, "status": assignment.status})


class HeartbeatView(APIView):
    @extend_schema(request=HeartbeatInput, responses={200: dict}, summary="Keep the lease alive")
    def post(self, request: Request, assignment_id: int) -> ApiResponse:
        serializer = HeartbeatInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        assignment: Assignment = services.assignment_heartbeat(
            assignment_id=assignment_id, expert=_user(request), **serializer.validated_data
        )
        return ApiResponse(
            {"id": assignment.pk, "lease_expires_at": assignment.lease_expires_at.isoformat()}
        )


class ImageView(APIView):
    """Served here, beside the claim, because who may see an item's image depends on the
    work: an expert sees the images of the item they hold (reviews.selectors)."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # The answer is the image itself, not something rendered: a client that accepts only
        # images (`Accept: image/*`, as a browser's <img> asks) is answered, not refused 406;
        # an error is JSON whatever it accepts, as everywhere in the API.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="images_retrieve",
        responses={(200, "image/*"): bytes},
        summary="An image of an item, from our own origin",
        description=(
            "Admins, ML engineers and leads get the images of the campaigns they see; an "
            "expert gets those of the item they hold a claim on. Anyone else: 404."
        ),
    )
    def get(self, request: Request, image_id: int) -> FileResponse:
        image = image_get_for_user(user=_user(request), image_id=image_id)
        response = FileResponse(image.file.open("rb"), content_type=image.content_type)
        response["X-Content-Type-Options"] = "nosniff"
        response["Content-Security-Policy"] = "default-src 'none'; sandbox"
        response["Content-Disposition"] = f'inline; filename="image-{image.pk}"'
        response["Cache-Control"] = "private, max-age=86400"
        return response
