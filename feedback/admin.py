from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, models, transaction
from django.db.models import Count
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from feedback import services
from feedback.errors import ValidationFailed
from feedback.imports import IntakeBusy, counted, lock_campaign_intake
from feedback.item_input import (
    STORED_IMAGES_MESSAGE,
    ResponseInput,
    check_gold_answer,
    check_prompt,
    content_hash,
    in_storage_order,
    lf_newlines,
    responses_count_problem,
    stored_images,
    unstorable,
)
from feedback.models import (
    ApiKey,
    Campaign,
    ExpertProfile,
    Invitation,
    Item,
    Qualification,
    QueueEntry,
    Response,
    User,
)


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "role", "is_active", "date_joined"]
    list_filter = ["role", "is_active"]
    search_fields = ["email", "first_name", "last_name"]
    fieldsets = (
        (None, {"fields": ("email", "password", "role")}),
        ("Personal info", {"fields": ("first_name", "last_name")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("email", "role", "password1", "password2")}),
    )


class ExpertProfileForm(forms.ModelForm):
    class Meta:
        model = ExpertProfile
        fields = "__all__"  # noqa: DJ007 (ExpertProfileAdmin decides which it shows)

    def clean_skills(self) -> list[str]:
        """A list of skill names, kept as add_user keeps them (stripped, each once, sorted):
        claims compare them with a campaign's required skills, and anything else (a number,
        one string, null) broke every claim and page of the expert."""
        skills = self.cleaned_data.get("skills")
        if skills is None:
            return []
        if not isinstance(skills, list) or not all(isinstance(s, str) for s in skills):
            raise ValidationError('Must be a JSON list of skill names, as ["law", "python"].')
        return sorted({s.strip() for s in skills if s.strip()})


@admin.register(ExpertProfile)
class ExpertProfileAdmin(admin.ModelAdmin):
    form = ExpertProfileForm
    list_display = ["user", "trust_score"]
    search_fields = ["user__email"]
    exclude = ["payout_details"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "key_hash", "created_at", "last_used_at"]


class InvitationAddForm(forms.ModelForm):
    days = forms.IntegerField(
        min_value=1, max_value=365, initial=14, help_text="Days the link stays valid."
    )

    class Meta:
        model = Invitation
        fields = ["email", "role"]

    def clean_email(self) -> str:
        email = str(self.cleaned_data["email"]).strip().lower()
        if User.objects.filter(email=email).exists():
            raise forms.ValidationError(f"{email} already has an account.")
        return email


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Adding an invitation creates it through the service and shows its link once; only the
    token's hash is stored, so the link cannot be shown again (delete it and invite anew)."""

    list_display = ["email", "role", "invited_by", "created_at", "expires_at", "accepted_at"]
    list_filter = ["role"]
    search_fields = ["email"]
    readonly_fields = ["token_hash"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return (
            super().has_add_permission(request)
            and getattr(request.user, "role", None) == User.Role.ADMIN
        )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The link went to one address with one role; editing either would break that promise.
        return False

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        if obj is None:
            kwargs["form"] = InvitationAddForm
            kwargs["fields"] = ["email", "role", "days"]
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None):
        if obj is None:
            return ["email", "role", "days"]
        return super().get_fields(request, obj)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        invitation, token = services.invitation_create(
            invited_by=request.user,  # type: ignore[arg-type]
            email=form.cleaned_data["email"],
            role=form.cleaned_data["role"],
            days=form.cleaned_data["days"],
        )
        obj.pk = invitation.pk
        obj.refresh_from_db()
        link = request.build_absolute_uri(reverse("invitation", kwargs={"token": token}))
        messages.warning(
            request,
            format_html(
                'Invitation link for {} (shown only now; copy it and send it): <a href="{}">{}</a>',
                invitation.email,
                link,
                link,
            ),
        )


MAX_POSITION = 32767  # Response.position is a smallint


def _settle_content_hash(item: Item, responses: list[Response]) -> None:
    """Give the item the API's content hash (feedback.item_input.content_hash) over its prompt,
    context and `responses` in their stored order; another item of the campaign with the same
    content is an error of the form, naming it, as a duplicate is for the API, rather than a
    failed save. Taken under the campaign's intake lock (held until the admin's transaction
    ends), so an import or a batch running meanwhile sees this item, or this sees theirs."""
    for r in responses:
        if not stored_images(r.images):
            raise ValidationError(
                f"The images of response {r.model_name!r} must be a list of stored images"
                f' ({{"id": <image id>}}), got {r.images!r}.'
            )
    item.content_hash = content_hash(
        item.prompt,
        item.context,
        [ResponseInput(r.model_name, r.text, r.format, r.images) for r in responses],
    )
    try:
        # Bounded, as for a batch: an import holds the lock for as long as it runs.
        lock_campaign_intake(item.campaign_id, wait_seconds=settings.INTAKE_LOCK_WAIT_SECONDS)
    except IntakeBusy as exc:
        raise ValidationError(exc.message) from None
    same = (
        Item.objects.filter(campaign_id=item.campaign_id, content_hash=item.content_hash)
        .exclude(pk=item.pk)
        .values_list("pk", flat=True)
        .first()
    )
    if same is not None:
        raise ValidationError(
            f"Item {same} of this campaign has the same prompt, context and responses."
        )


def _work_by_status(**where: Any) -> dict[str, int]:
    """How many assignments match `where`, by status."""
    from reviews.models import Assignment

    rows = Assignment.objects.filter(**where).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def _refuse_changing_work(item: Item) -> None:
    """An item experts hold or have judged keeps what they were given: its campaign, prompt,
    context and responses (a review's ratings and choice name its responses, and a claim's
    page shows them). Raise, naming that work, when it has any. An item with only skipped or
    expired assignments may change, but not move: those stay in its campaign."""
    if item._state.adding:
        return
    counts = _work_by_status(item_id__in=[item.pk])
    live, submitted = counts.get("claimed", 0), counts.get("submitted", 0)
    if live or submitted:
        raise ValidationError(
            f"Item {item.pk} has {counted(live, 'live claim')} and {counted(submitted, 'submitted review')}:"
            " its campaign, prompt, context and responses are what experts were given and"
            " judged, so they stay as they are. Add a new item instead (a live claim can be"
            ' released: Assignments, "Release the selected claims").'
        )
    stored_campaign = Item.objects.filter(pk=item.pk).values_list("campaign_id", flat=True).first()
    if counts and stored_campaign != item.campaign_id:
        raise ValidationError(
            f"Item {item.pk} has {counted(sum(counts.values()), 'skipped or expired assignment')} in"
            " its campaign, which stay there: it cannot move to another campaign. Add it to"
            " that one as a new item instead."
        )


def _item_content_changed(item: Item) -> bool:
    """Whether the item form changed what the content hash covers or where it must be unique."""
    if item._state.adding:
        return True
    stored = Item.objects.filter(pk=item.pk).values_list("campaign_id", "prompt", "context")
    return stored.first() != (item.campaign_id, item.prompt, item.context)


class StorableJSONField(forms.JSONField):
    """JSON typed in the admin, refused when it holds what PostgreSQL cannot store (a NUL
    character, a lone surrogate such as a typed \\ud800 escape), and shown again as typed:
    Django would show it decoded, which a page cannot carry."""

    def bound_data(self, data: Any, initial: Any) -> Any:
        value = super().bound_data(data, initial)
        if isinstance(data, str) and unstorable(value):
            return InvalidJSONInput(data)
        return value

    def validate(self, value: Any) -> None:
        super().validate(value)
        problem = unstorable(value)
        if problem:
            raise ValidationError(f"This value {problem}.")


JSON_FIELDS: Mapping[type[models.Field[Any, Any]], Mapping[str, Any]] = {
    models.JSONField: {"form_class": StorableJSONField}
}


class ResponseForm(forms.ModelForm):
    # Text as typed: the default field strips it, which would change the text experts review
    # (and its hash) on every save of the item.
    text = forms.CharField(widget=forms.Textarea, strip=False)

    class Meta:
        model = Response
        fields = "__all__"  # noqa: DJ007 (the admin's inline decides which it shows)

    def clean_text(self) -> str:
        """Browsers send a textarea's line breaks as CRLF (a lone CR too, once the page has
        shown it): typed text gets LF, and a stored text that differs only in its line breaks
        is kept as it is."""
        text = lf_newlines(self.cleaned_data["text"])
        if self.instance.pk and text == lf_newlines(self.instance.text):
            return self.instance.text
        return text


class ResponseFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        """Positions and the item's content hash, from the responses as the form leaves them.

        New responses left at one position (the form's default 0 on each) or at positions the
        item's other responses hold are numbered after those, in the form's order, so
        `position` keeps the order they were typed in (their ids will not; see
        ItemAdmin.save_formset). When the item's content changed (prompt, context, campaign,
        or a response added, deleted or edited in what the hash covers), its hash is settled
        again; otherwise the stored one is kept (an item made by generation keeps the hash of
        its prompt alone, which is how a batch sending it again is seen as a duplicate).
        """
        super().clean()
        kept = [f for f in self.forms if f.cleaned_data and not f.cleaned_data.get("DELETE")]
        # The forms' instances already hold what was typed (the forms' own cleaning).
        new = [f.instance for f in kept if f.instance._state.adding]
        taken = [f.instance.position for f in kept if not f.instance._state.adding]
        positions = [r.position for r in new]
        if len(set(positions)) < len(positions) or set(taken) & set(positions):
            first = max(taken, default=-1) + 1
            if first + len(new) - 1 > MAX_POSITION:
                raise ValidationError(f"Positions go up to {MAX_POSITION}.")
            for n, response in enumerate(new, start=first):
                response.position = n
        item = self.instance
        hashed = ("model_name", "text", "images", "position")
        # Compared with the rows themselves: the form's own idea of a change counts fields
        # the hash does not cover, and a missing hidden initial value as a change.
        stored = (
            {
                values[0]: values[1:]
                for values in Response.objects.filter(item_id=item.pk).values_list("pk", *hashed)
            }
            if item.pk
            else {}
        )
        now = {f.instance.pk: tuple(getattr(f.instance, n) for n in hashed) for f in kept}
        if now == stored and not _item_content_changed(item):
            return
        _refuse_changing_work(item)
        campaign = Campaign.objects.filter(pk=item.campaign_id).first()
        if campaign is not None and (problem := responses_count_problem(campaign, len(kept))):
            # As the API refuses it: experts would be served a pair of one, or of three.
            raise ValidationError(f"{problem[0].upper()}{problem[1:]}.")
        # Stored order: by position, then id (new ones after, in the form's order).
        ordered = sorted(
            (f.instance for f in kept),
            key=lambda r: (r.position, r.pk is None, r.pk or 0),
        )
        _settle_content_hash(item, ordered)


class ResponseInline(admin.TabularInline):
    model = Response
    formfield_overrides = JSON_FIELDS
    form = ResponseForm
    formset = ResponseFormSet
    extra = 0


class CampaignForm(forms.ModelForm):
    class Meta:
        model = Campaign
        fields = "__all__"  # noqa: DJ007 (CampaignAdmin decides which it shows)

    def clean(self) -> dict[str, Any]:
        """Each field checked as the API checks it (its ranges and types, the status's move,
        then the rubric and pay, a rating campaign keeping a rubric), each problem an error of
        its field."""
        from feedback.api import CampaignPatchSerializer

        cleaned: dict[str, Any] = super().clean() or self.cleaned_data
        empty: dict[str, Any] = {
            "rubric": [],
            "pay": {},
            "required_skills": [],
            "generation_models": [],
        }
        for name, value in empty.items():
            if name in cleaned and cleaned[name] is None:
                cleaned[name] = value
        names: list[str] = list(CampaignPatchSerializer().fields)
        checks = CampaignPatchSerializer(data={n: cleaned[n] for n in names if n in cleaned})
        if not checks.is_valid():
            for name, problems in checks.errors.items():
                self.add_error(name if name in self.fields else None, [str(p) for p in problems])
            return cleaned
        if "status" in cleaned:
            old = self.instance.status if self.instance.pk else None
            problem = services.campaign_status_problem(old=old, new=cleaned["status"])
            if problem:
                self.add_error("status", problem)
        kind = self.instance.kind if self.instance.pk else cleaned.get("kind")
        changes = {name: cleaned[name] for name in ("rubric", "pay") if name in cleaned}
        try:
            cleaned.update(services.campaign_changes_checked(kind=str(kind), changes=changes))
        except ValidationFailed as exc:
            for path, problems in exc.fields.items():
                name = path.split(".")[0].split("[")[0]
                self.add_error(
                    name if name in self.fields else None, f"{path}: {'; '.join(problems)}"
                )
        return cleaned


class KeepsWork:
    """Deleting in the admin an item or campaign experts were given work in would delete
    that work (assignments, and with them reviews), which the admin never deletes (each holds
    a queue slot; a review is what an expert was paid for). Django then says only that the
    account lacks the permission to delete "assignment"; the delete page says instead how
    much work there is and that it is kept."""

    work_of = ""  # the assignments' link to the object deleted: "item" or "campaign"

    def _work_kept(self, ids: list[Any]) -> str | None:
        """What work there is on these objects, said as the delete page says it; None for none."""
        statuses = _work_by_status(**{f"{self.work_of}_id__in": ids})
        if not statuses:
            return None
        said = ", ".join(f"{n:,} {status}" for status, n in sorted(statuses.items()))
        return (
            f"{counted(sum(statuses.values()), 'assignment')} ({said}): the work experts were"
            f" given here is kept, so this {self.work_of} cannot be deleted"
        )

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        deleted, counts, perms_needed, protected = super().get_deleted_objects(  # type: ignore[misc]
            objs, request
        )
        kept = self._work_kept([obj.pk for obj in objs])
        if kept:
            protected = [*protected, kept]
            perms_needed = set()
        return deleted, counts, perms_needed, protected

    def _work_since(self, ids: list[Any]) -> str | None:
        """Work given on these objects since the delete page counted it. Their queue rows are
        locked first, in item order as a claim takes one, then their items: a claim under way
        (which holds its item's queue row) is waited for and then counted, and a later one
        skips the rows held. A gold item's claim takes no queue row; its link to the item is
        checked when it commits, which waits for the item's lock: before it, the claim is
        counted here; after it, the item is gone and the claim fails and looks elsewhere."""
        if connection.vendor == "postgresql":
            column = "id" if self.work_of == "item" else "campaign_id"
            queue_column = "item_id" if self.work_of == "item" else "campaign_id"
            with connection.cursor() as cursor:
                for table, where, order in (
                    (QueueEntry._meta.db_table, queue_column, "item_id"),
                    (Item._meta.db_table, column, "id"),
                ):
                    cursor.execute(
                        f"SELECT count(*) FROM (SELECT 1 FROM {table}"  # noqa: S608
                        f" WHERE {where} = ANY(%s) ORDER BY {order} FOR UPDATE) locked",
                        [ids],
                    )
        return self._work_kept(ids)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        with transaction.atomic():
            kept = self._work_since([obj.pk])
            if kept:
                request.work_kept = kept  # type: ignore[attr-defined]  # for response_delete
                return
            super().delete_model(request, obj)  # type: ignore[misc]

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> Any:
        kept = getattr(request, "work_kept", None)
        if kept:
            messages.error(request, kept)
            opts = self.model._meta  # type: ignore[attr-defined]
            return HttpResponseRedirect(
                reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj_id])
            )
        return super().response_delete(request, obj_display, obj_id)  # type: ignore[misc]

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        with transaction.atomic():
            kept = self._work_since(list(queryset.values_list("pk", flat=True)))
            if kept:
                raise PermissionDenied(kept)
            super().delete_queryset(request, queryset)  # type: ignore[misc]


@admin.register(Campaign)
class CampaignAdmin(KeepsWork, admin.ModelAdmin):
    """A change goes through campaign_update, as the API's does: a new overlap moves the queue
    slots of the campaign's items. What the API does not change (the kind, the slug, who made
    it and when) is read-only once the campaign is made."""

    form = CampaignForm
    work_of = "campaign"
    list_display = ["name", "kind", "status", "overlap", "acceptance", "created_at"]
    list_filter = ["kind", "status"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["kind", "slug", "created_by", "created_at"] if obj is not None else []

    def get_prepopulated_fields(self, request: HttpRequest, obj: Any = None) -> dict[str, Any]:
        return {} if obj is not None else self.prepopulated_fields

    def _manages(self, request: HttpRequest) -> bool:
        # As the API: only admins and ML engineers make or change campaigns.
        return bool(getattr(request.user, "manages_campaigns", False))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._manages(request) and super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._manages(request) and super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Campaign, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = obj.created_by or request.user  # type: ignore[assignment]
            super().save_model(request, obj, form, change)
            return
        services.campaign_update(
            actor=request.user,  # type: ignore[arg-type]
            campaign=obj,
            changes={n: form.cleaned_data[n] for n in form.changed_data if n in services.UPDATABLE},
        )


class ItemForm(forms.ModelForm):
    # Set per request by ItemAdmin.get_form: whether the responses' inline is on the page (a
    # user without permissions on responses does not get it).
    responses_inline = True

    class Meta:
        model = Item
        fields = "__all__"  # noqa: DJ007 (ItemAdmin decides which it shows)

    def _object(self, name: str) -> dict[str, Any]:
        """A JSON object field: left blank, an empty object (as the API's default)."""
        value = self.cleaned_data.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValidationError("Must be a JSON object.")
        return value

    def clean_prompt(self) -> Any:
        """A prompt as the API takes it: text, or chat messages whose images are stored ones
        (the admin stores none), so the review page and generation can show and send it."""
        value = self.cleaned_data.get("prompt")
        errors: dict[str, list[str]] = {}
        check_prompt(value, errors, images_message=STORED_IMAGES_MESSAGE)
        if errors:
            raise ValidationError([f"{where}: {m}" for where, ms in errors.items() for m in ms])
        return value

    def clean_context(self) -> dict[str, Any]:
        context = self._object("context")
        if "images" in context and not stored_images(context["images"]):
            raise ValidationError(f"images: {STORED_IMAGES_MESSAGE}")
        return context

    def clean_metadata(self) -> dict[str, Any]:
        return self._object("metadata")

    def clean(self) -> dict[str, Any]:
        """Without the responses' inline, the content hash is settled here, over the responses
        stored (none for a new item)."""
        cleaned: dict[str, Any] = super().clean() or self.cleaned_data
        gold_answer = cleaned.get("gold_answer")
        if gold_answer not in (None, {}) and isinstance(cleaned.get("campaign"), Campaign):
            problems: dict[str, list[str]] = {}
            check_gold_answer(gold_answer, cleaned.get("is_gold"), cleaned["campaign"], problems)
            for problem in problems.get("gold_answer", []):
                self.add_error("gold_answer", problem)
        if self.responses_inline or self.errors:
            return cleaned
        item = self.instance
        for name in ("campaign", "prompt", "context"):
            if name in cleaned:
                setattr(item, name, cleaned[name])
        if _item_content_changed(item):
            _refuse_changing_work(item)
            stored = list(item.responses.order_by("position", "id")) if item.pk else []
            _settle_content_hash(item, stored)
        return cleaned


@admin.register(Item)
class ItemAdmin(KeepsWork, admin.ModelAdmin):
    form = ItemForm
    work_of = "item"
    formfield_overrides = JSON_FIELDS
    list_display = ["id", "campaign", "external_id", "priority", "is_gold", "open_slots"]
    list_filter = ["campaign", "is_gold"]
    search_fields = ["external_id"]
    inlines = [ResponseInline]
    readonly_fields = ["content_hash", "open_slots"]
    list_select_related = ["campaign", "queue"]
    # Filtered lists count what they show and no more: the table's own total is a count of
    # every item (a million rows, ~0.1 s) on every page.
    show_full_result_count = False

    @admin.display(description="open slots", ordering="queue__open_slots")
    def open_slots(self, item: Item) -> int | None:
        entry: QueueEntry | None = getattr(item, "queue", None)
        return None if entry is None else entry.open_slots

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        form = super().get_form(request, obj, change, **kwargs)
        if issubclass(form, ItemForm):
            form.responses_inline = any(
                isinstance(inline, ResponseInline)
                for inline in self.get_inline_instances(request, obj)
            )
        return form

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        """New responses are stored in a random order, as from every other way in (blind
        review: their ids must not tell the order they were typed in)."""
        if formset.model is not Response:
            super().save_formset(request, form, formset, change)
            return
        formset.save(commit=False)
        for response in formset.deleted_objects:
            response.delete()
        for response, _changed in formset.changed_objects:
            response.save()
        for response in in_storage_order(formset.new_objects):
            response.save()
        formset.save_m2m()

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # After the inline responses, which decide whether a new item is ready to review.
        services.item_queue_sync(item=form.instance)


admin.site.register(Qualification)
