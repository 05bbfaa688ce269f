"""REST endpoints of the core domain: campaigns and items."""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response as ApiResponse
from rest_framework.views import APIView

from feedback import generation, imports, services
from feedback.api_errors import JSONParser
from feedback.errors import PermissionDenied, ValidationFailed, unknown_fields
from feedback.images import (
    PixelBudget,
    image_intake,
    images_batch_max_pixels,
    images_by_name,
    images_check_batch,
)
from feedback.item_input import MAX_NESTING
from feedback.models import Campaign, GenerationJob, ImportJob, User
from feedback.selectors import campaign_get_for_user, campaigns_for_user


def _user(request: Request) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


class CampaignOutput(serializers.ModelSerializer[Campaign]):
    """A campaign as the `viewer` in the context may see it: the models it compares are named
    only to those who manage campaigns (blind review: experts and leads review its items),
    and its share of gold items is not told to the experts whom the gold items check."""

    generation_models = serializers.ListField(
        child=serializers.JSONField(),
        required=False,
        help_text=(
            "the models a generation asks by default, each a name or an object with its prices;"
            " shown to admins and ML engineers only"
        ),
    )

    def to_representation(self, instance: Campaign) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        viewer = self.context.get("viewer")
        if not (isinstance(viewer, User) and viewer.manages_campaigns):
            data.pop("generation_models", None)
        if not (isinstance(viewer, User) and viewer.sees_all_campaigns):
            data.pop("gold_rate", None)
        return data

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


class TextField(serializers.CharField):
    """Text, and only text: DRF's CharField takes a number and stores its digits (a skip
    `note` of 5 became "5"), where a client sending a number for a name or a note has sent
    the wrong thing, and is told so with a 400 naming the field."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class BoolField(serializers.BooleanField):
    """true or false, and only that: DRF's BooleanField also takes "yes", "on", 1 and "t", where
    a client sending those has sent the wrong thing (an item's `is_gold` is refused the same
    way). A form-encoded body has no booleans, so there the words "true" and "false" (in any
    case: Python's requests writes False as "False") stand for them."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if isinstance(data, bool):
            return data
        if isinstance(data, str) and data.lower() in ("true", "false"):
            return data.lower() == "true"
        self.fail("invalid")


class KnownFieldsOnly(serializers.Serializer[Any]):
    """Refuses a field it does not know with a 400 naming it: a misspelt field read as its
    default (`activ` on a heartbeat, `overlaps` on a campaign) would change something other
    than what the client meant while telling it all went well. `also_taken` are fields a
    client may send back as it got them (a campaign's `id`), which are ignored."""

    what = ""
    also_taken: frozenset[str] = frozenset()

    def to_internal_value(self, data: Any) -> Any:
        # Named beside the known fields' own errors, so one answer lists every problem.
        sent = data if isinstance(data, dict) else {}
        unknown = unknown_fields(sent, {*self.fields, *self.also_taken}, self.what)
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if unknown and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**unknown, **exc.detail}) from None
            raise
        if unknown:
            raise serializers.ValidationError(unknown)
        return value


class CampaignInputSerializer(KnownFieldsOnly):
    what = "campaign"
    # What GET gives, which a client may send back as it got it (`id`, `created_at`).
    also_taken = frozenset(CampaignOutput.Meta.fields)
    name = TextField(max_length=200)
    slug = serializers.SlugField(max_length=100, required=False)
    kind = serializers.ChoiceField(choices=Campaign.Kind.choices)
    status = serializers.ChoiceField(
        choices=Campaign.Status.choices,
        default=Campaign.Status.DRAFT,
        help_text=(
            "Made as draft or active; then draft → active ⇄ paused → closed (a draft or paused "
            "campaign may be closed at once). Closed is final."
        ),
    )
    instructions = TextField(required=False, allow_blank=True, default="")
    rubric = serializers.ListField(child=serializers.DictField(), required=False, default=list)
    overlap = serializers.IntegerField(min_value=1, max_value=50, default=1)
    required_skills = serializers.ListField(child=TextField(max_length=64), default=list)
    gold_rate = serializers.FloatField(min_value=0, max_value=0.5, default=0.0)
    requires_qualification = BoolField(default=False)
    pay = serializers.DictField(required=False, default=dict)
    acceptance = serializers.ChoiceField(choices=Campaign.Acceptance.choices, default="auto")
    lease_minutes = serializers.IntegerField(min_value=1, max_value=24 * 60, default=30)
    generation_models = serializers.ListField(
        child=serializers.JSONField(),
        default=list,
        help_text=(
            "The models a generation asks when its request names none: each a name, or "
            '{"name", "input_usd_per_million", "output_usd_per_million", "temperature", '
            '"max_tokens"} as in a generation\'s models, so that its runs count their cost.'
        ),
    )

    def validate_generation_models(self, value: list[Any]) -> list[Any]:
        """Checked as a generation checks its `models`, which default to these: a name given
        twice here would be refused there, on a field the client did not send. Each model is
        kept as the generation reads it: a name stripped, an object with its name stripped."""
        fields: dict[str, list[str]] = {}
        specs = generation.model_specs_parse(value, field="generation_models", fields=fields)
        if fields:
            raise serializers.ValidationError(
                [
                    problem if where == "generation_models" else f"{where}: {problem}"
                    for where, problems in fields.items()
                    for problem in problems
                ]
            )
        return [
            spec.name if isinstance(raw, str) else spec.as_json()
            for raw, spec in zip(value, specs, strict=True)
        ]


class CampaignPatchSerializer(CampaignInputSerializer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, partial=True, **kwargs)


class CampaignListView(APIView):
    @extend_schema(responses=CampaignOutput(many=True), summary="Campaigns you can see")
    def get(self, request: Request) -> ApiResponse:
        user = _user(request)
        campaigns = campaigns_for_user(user=user).order_by("-created_at", "-id")
        return ApiResponse(CampaignOutput(campaigns, many=True, context={"viewer": user}).data)

    @extend_schema(request=CampaignInputSerializer, responses={201: CampaignOutput})
    def post(self, request: Request) -> ApiResponse:
        serializer = CampaignInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = _user(request)
        campaign = services.campaign_create(
            actor=user, data=services.CampaignInput(**serializer.validated_data)
        )
        return ApiResponse(
            CampaignOutput(campaign, context={"viewer": user}).data, status=status.HTTP_201_CREATED
        )


class CampaignDetailView(APIView):
    @extend_schema(responses=CampaignOutput)
    def get(self, request: Request, campaign_id: int) -> ApiResponse:
        user = _user(request)
        campaign = campaign_get_for_user(user=user, campaign_id=campaign_id)
        return ApiResponse(CampaignOutput(campaign, context={"viewer": user}).data)

    @extend_schema(request=CampaignPatchSerializer, responses=CampaignOutput)
    def patch(self, request: Request, campaign_id: int) -> ApiResponse:
        campaign = campaign_get_for_user(user=_user(request), campaign_id=campaign_id)
        serializer = CampaignPatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        changes = {k: v for k, v in serializer.validated_data.items() if k in request.data}
        # Fixed once the campaign exists; sent back as GET gave them, they change nothing.
        fixed = [k for k in ("slug", "kind") if k in changes and changes[k] != getattr(campaign, k)]
        if fixed:
            raise ValidationFailed(
                "slug and kind are fixed once a campaign exists.",
                fields={k: ["cannot be changed"] for k in fixed},
            )
        changes = {k: v for k, v in changes.items() if k not in {"slug", "kind"}}
        campaign = services.campaign_update(
            actor=_user(request), campaign=campaign, changes=changes
        )
        return ApiResponse(CampaignOutput(campaign, context={"viewer": _user(request)}).data)


class ItemsAddedOutput(serializers.Serializer[Any]):
    created = serializers.IntegerField()
    item_ids = serializers.ListField(child=serializers.IntegerField())
    duplicates = serializers.ListField(child=serializers.DictField())


def _nested_too_deeply() -> ValidationFailed:
    """Python's JSON parser gives up on lists and objects nested about a thousand deep; the
    items are refused then, as they would be for nesting more than MAX_NESTING once read."""
    return ValidationFailed(
        "The items nest lists and objects too deeply to be read; a field of an item may nest "
        f"at most {MAX_NESTING} levels.",
        fields={"items": ["nested too deeply to be read"]},
    )


# The parts of a multipart request each endpoint reads; any other (a misspelt `maping`, which
# would leave the file read with the mapping guessed) is refused, naming it.
BATCH_PARTS = frozenset({"items", "images"})
IMPORT_PARTS = frozenset({"file", "format", "mapping", "on_error", "images"})


def _refuse_unknown_parts(request: Request, known: frozenset[str], what: str) -> None:
    # A form posted from a signed-in page carries Django's CSRF token as a part of its own.
    unknown = sorted(
        str(name)
        for name in (*request.POST, *request.FILES)
        if name not in known and name != "csrfmiddlewaretoken"
    )
    if unknown:
        raise ValidationFailed(
            f"Unknown parts: {', '.join(unknown)}; {what} takes"
            f" {', '.join(f'`{name}`' for name in sorted(known))}.",
            fields={name: [f"is not a part of {what}"] for name in unknown},
        )
    # Each part but `images` once: of two `file` parts (two shards of a dataset) all but the
    # last would be dropped without a word, as would a second `mapping` or `format`.
    repeated = sorted(
        name
        for name in known - {"images"}
        if len(request.POST.getlist(name)) + len(request.FILES.getlist(name)) > 1
    )
    if repeated:
        raise ValidationFailed(
            f"Parts sent more than once: {', '.join(repeated)}; {what} takes each once"
            + (
                " (one file per import: send each file in an import of its own)."
                if "file" in repeated
                else "."
            ),
            fields={name: [f"is sent more than once; {what} takes one"] for name in repeated},
        )


class ItemsCreateView(APIView):
    # JSON, or multipart with images; a form-encoded body is no batch (415, as any other).
    parser_classes = [JSONParser, MultiPartParser]

    @extend_schema(
        request={"application/json": {"type": "array", "items": {"type": "object"}}},
        responses={201: ItemsAddedOutput},
        summary="Add a batch of items, all or nothing",
        description=(
            "A JSON list of items in the documented item format. If any item is invalid "
            "nothing is stored and the 400 names every bad index and field "
            "(`items[3].responses[1].text`). Duplicates (same external_id or content) are "
            "skipped and reported. A batch is checked within the request, so its images are "
            "held to IMAGES_BATCH_MAX in number (1000) and IMAGES_BATCH_MAX_PIXELS in pixels "
            "over all their frames (400 million); more is a 413 (`too_many_images`, "
            "`too_many_pixels`): send larger sets as an import."
        ),
    )
    def post(self, request: Request, campaign_id: int) -> ApiResponse:
        from django.conf import settings

        # Refuse an oversized upload from its headers, before its body is read.
        imports.batch_check_request_size(request.META.get("CONTENT_LENGTH"))
        user = _user(request)
        campaign = campaign_get_for_user(user=user, campaign_id=campaign_id)
        if not user.manages_campaigns:
            raise PermissionDenied("Only admins and ML engineers add items.")
        imports.check_campaign_open(campaign)
        raw: Any = request.data
        uploads: dict[str, Any] = {}
        if request.content_type.startswith("multipart/"):
            # Multipart: the items as JSON text in the `items` field, images as files.
            _refuse_unknown_parts(request, BATCH_PARTS, "a batch")
            text = request.data.get("items")
            try:
                raw = json.loads(text) if isinstance(text, str) else None
            except json.JSONDecodeError as exc:
                raise ValidationFailed(
                    f"The items field is not valid JSON: {exc.msg} at line {exc.lineno} "
                    f"column {exc.colno}.",
                    fields={"items": ["not valid JSON"]},
                ) from None
            except ValueError as exc:  # an integer of more digits than Python converts
                raise ValidationFailed(
                    f"The items field could not be read: {exc}.",
                    fields={"items": ["not readable JSON"]},
                ) from None
            except RecursionError:
                raise _nested_too_deeply() from None
            uploads = images_by_name(request.FILES.getlist("images"))
            imports.images_check_total(uploads.values(), sent_with="batch")
        if isinstance(raw, list) and len(raw) > settings.ITEMS_BATCH_MAX:
            raise ValidationFailed(
                f"A batch holds at most {settings.ITEMS_BATCH_MAX} items; got {len(raw)}. "
                "Send several batches or upload a file to imports/.",
                fields={"items": ["too many items"]},
            )
        # Checking images takes time by the image and by the pixel: a batch is held to what a
        # web request can check well within gunicorn's timeout; an import has a worker's time.
        images_check_batch(raw, uploads)
        budget = PixelBudget(images_batch_max_pixels())
        # Images stored for a batch that turns out invalid roll back with it, and those of
        # its duplicates are deleted; their files go once the transaction has ended.
        with (
            image_intake(campaign=campaign, uploads=uploads, budget=budget) as images,
            transaction.atomic(),
        ):
            parsed = services.items_parse_batch(campaign=campaign, raw_items=raw, images=images)
            added = services.items_add(actor=user, campaign=campaign, items=parsed, images=images)
        return ApiResponse(
            {
                "created": len(added.created),
                "item_ids": added.created,
                "duplicates": added.duplicates,
            },
            status=status.HTTP_201_CREATED,
        )


# --- imports ---------------------------------------------------------------------------------


class ImportOutput(serializers.ModelSerializer[ImportJob]):
    # Plain strings in the schema: several models have a `status` enum of their own.
    status = serializers.CharField(help_text="queued, running, succeeded or failed")
    format = serializers.CharField(help_text="jsonl, csv, parquet or label_studio")
    on_error = serializers.CharField(help_text="abort or skip")
    rows = serializers.IntegerField(source="rows_total")
    created = serializers.IntegerField(source="created_count")
    duplicates = serializers.IntegerField(source="duplicate_count")
    invalid = serializers.IntegerField(source="invalid_count")
    duplicate_rows = serializers.JSONField(source="duplicates")
    progress = serializers.SerializerMethodField(
        help_text="How far the file has been read: rows, and bytes of size_bytes. Written every"
        " few seconds while the import runs; the counts above are written when it ends."
    )

    class Meta:
        model = ImportJob
        fields = [
            "id",
            "campaign",
            "status",
            "format",
            "on_error",
            "mapping",
            "filename",
            "size_bytes",
            "progress",
            "rows",
            "created",
            "duplicates",
            "invalid",
            "errors",
            "duplicate_rows",
            "message",
            "created_at",
            "started_at",
            "finished_at",
            "takeovers",
        ]

    @extend_schema_field(
        {
            "type": "object",
            "properties": {
                "rows_read": {"type": "integer"},
                "bytes_read": {"type": "integer"},
            },
        }
    )
    def get_progress(self, job: ImportJob) -> dict[str, int]:
        return {"rows_read": job.rows_read, "bytes_read": job.bytes_read}


class ImportInput(serializers.Serializer[Any]):
    file = serializers.FileField(
        help_text="JSONL, CSV, Parquet, or a Label Studio JSON export (.json)"
    )
    format = serializers.ChoiceField(choices=ImportJob.Format.choices, required=False)
    mapping = TextField(required=False, allow_blank=True, help_text="JSON: item field -> column")
    on_error = serializers.ChoiceField(
        choices=ImportJob.OnError.choices, default=ImportJob.OnError.ABORT
    )
    images = serializers.ListField(child=serializers.FileField(), required=False)


class ImportListCreateView(APIView):
    @extend_schema(
        operation_id="campaigns_imports_list",
        responses=ImportOutput(many=True),
        summary="Imports of a campaign",
    )
    def get(self, request: Request, campaign_id: int) -> ApiResponse:
        user = _user(request)
        campaign = campaign_get_for_user(user=user, campaign_id=campaign_id)
        if not user.manages_campaigns:
            raise PermissionDenied("Only admins and ML engineers see imports.")
        jobs = ImportJob.objects.filter(campaign=campaign).order_by("-created_at", "-id")[:100]
        return ApiResponse(ImportOutput(jobs, many=True).data)

    @extend_schema(
        operation_id="campaigns_imports_create",
        request={"multipart/form-data": ImportInput},
        responses={202: ImportOutput},
        summary="Upload a file of items (imported in the background)",
        description=(
            "multipart/form-data with `file` (JSONL, CSV, Parquet or a Label Studio JSON "
            "export, up to IMPORT_MAX_BYTES), optional `format`, `mapping` (JSON), `on_error` "
            "(`abort`: all or nothing, the default; `skip`: import the valid rows) and `images` "
            "(files that items name as `upload:<file name>`). Answers 202 with the import; "
            "poll `GET imports/{id}/` for its status, counts and errors."
        ),
    )
    def post(self, request: Request, campaign_id: int) -> ApiResponse:
        # Refuse an oversized upload from its headers, before its body is read.
        imports.import_check_request_size(request.META.get("CONTENT_LENGTH"))
        user = _user(request)
        campaign = campaign_get_for_user(user=user, campaign_id=campaign_id)
        if not user.manages_campaigns:
            raise PermissionDenied("Only admins and ML engineers import items.")
        if not request.content_type.startswith("multipart/form-data"):
            raise imports.UnsupportedMediaType(
                f"Send the file as multipart/form-data in a `file` field, not as "
                f"{request.content_type or 'a body without a content type'}.",
                fields={"file": ["required, as a multipart/form-data part"]},
            )
        _refuse_unknown_parts(request, IMPORT_PARTS, "an import")
        upload = request.FILES.get("file")
        if upload is None:
            raise ValidationFailed("No file was sent.", fields={"file": ["this field is required"]})
        fmt = request.data.get("format") or None
        job = imports.import_create(
            actor=user,
            campaign=campaign,
            upload=upload,
            format=fmt,
            mapping=request.data.get("mapping") or None,
            on_error=request.data.get("on_error") or ImportJob.OnError.ABORT,
            images=request.FILES.getlist("images"),
        )
        job.refresh_from_db()
        return ApiResponse(ImportOutput(job).data, status=status.HTTP_202_ACCEPTED)


class ImportDetailView(APIView):
    @extend_schema(
        operation_id="imports_retrieve",
        responses=ImportOutput,
        summary="Status, counts and errors of an import",
    )
    def get(self, request: Request, import_id: int) -> ApiResponse:
        job = imports.import_get_for_user(user=_user(request), import_id=import_id)
        campaign_get_for_user(user=_user(request), campaign_id=job.campaign_id)
        return ApiResponse(ImportOutput(job).data)


# --- generation ------------------------------------------------------------------------------


class GenerationOutput(serializers.ModelSerializer[GenerationJob]):
    status = serializers.CharField(help_text="queued, running, succeeded or failed")
    models = serializers.JSONField(source="model_specs")

    class Meta:
        model = GenerationJob
        fields = [
            "id",
            "campaign",
            "status",
            "models",
            "item_ids",
            "items_total",
            "items_done",
            "responses_created",
            "failed_count",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "cost_usd_micros",
            "answers_without_usage",
            "answers_without_price",
            "message",
            "created_at",
            "started_at",
            "finished_at",
            "takeovers",
        ]


class GenerateInput(serializers.Serializer[Any]):
    models = serializers.ListField(
        child=serializers.JSONField(),
        required=False,
        help_text='model names or {"name", "input_usd_per_million", "output_usd_per_million", '
        '"temperature", "max_tokens"}; default: the campaign\'s generation_models',
    )
    item_ids = serializers.ListField(child=serializers.IntegerField(), required=False)


class GenerateView(APIView):
    @extend_schema(
        operation_id="campaigns_generate_create",
        request=GenerateInput,
        responses={202: GenerationOutput},
        summary="Ask models for the responses items lack (in the background)",
    )
    def post(self, request: Request, campaign_id: int) -> ApiResponse:
        user = _user(request)
        campaign = campaign_get_for_user(user=user, campaign_id=campaign_id)
        if not user.manages_campaigns:
            raise PermissionDenied("Only admins and ML engineers generate responses.")
        body = request.data
        if not isinstance(body, dict):
            # Asking costs money: a body that is not the documented object is refused, never
            # read as "every item with the campaign's models".
            raise ValidationFailed(
                'The body must be a JSON object, such as {"item_ids": [...], "models": [...]},'
                " or {} for every item lacking responses with the campaign's models.",
                fields={"body": ["must be a JSON object"]},
            )
        # A misspelt key (`items`) would otherwise be read as its default: every item. The
        # values are checked by generation_create, which names each one.
        unknown = unknown_fields(body, GenerateInput().fields, "generation request")
        if unknown:
            raise ValidationFailed(
                f"Unknown fields: {', '.join(unknown)}; a generation request takes"
                " `models` and `item_ids`.",
                fields=unknown,
            )
        job = generation.generation_create(
            actor=user,
            campaign=campaign,
            models=body.get("models", generation.LEFT_OUT),
            item_ids=body.get("item_ids", generation.LEFT_OUT),
        )
        job.refresh_from_db()
        return ApiResponse(GenerationOutput(job).data, status=status.HTTP_202_ACCEPTED)


class GenerationDetailView(APIView):
    @extend_schema(
        operation_id="generations_retrieve",
        responses=GenerationOutput,
        summary="Progress, usage, cost and errors of a generation job",
    )
    def get(self, request: Request, generation_id: int) -> ApiResponse:
        job = generation.generation_get_for_user(user=_user(request), generation_id=generation_id)
        campaign_get_for_user(user=_user(request), campaign_id=job.campaign_id)
        return ApiResponse(GenerationOutput(job).data)
