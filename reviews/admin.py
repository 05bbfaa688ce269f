from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from reviews import services
from reviews.models import Assignment, Review


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    """Assignments are read here, never written: each one holds a queue slot, which only the
    services take and give back. A stuck claim is released by the action below."""

    list_display = ["id", "campaign", "item", "expert", "status", "claimed_at", "lease_expires_at"]
    list_filter = ["status", "campaign"]
    list_select_related = ["campaign", "item", "expert"]
    raw_id_fields = ["item", "expert"]
    # Filtered lists count what they show and no more: the table's own total would count
    # every assignment (millions) on every page.
    show_full_result_count = False
    actions = ["release_claims"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Assignment | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Assignment | None = None) -> bool:
        return False

    @admin.action(description="Release the selected claims (their slots go back to the queue)")
    def release_claims(self, request: HttpRequest, queryset: QuerySet[Assignment]) -> None:
        selected = list(queryset.values_list("pk", "status"))
        released = services.assignments_release(assignment_ids=[pk for pk, _ in selected])
        message = f"Released {released} of the {len(selected)} selected."
        # The others, by what they were when selected: submitted, skipped or expired already.
        left = [(pk, status) for pk, status in selected if status != Assignment.Status.CLAIMED]
        if left:
            shown = ", ".join(f"{pk} ({status})" for pk, status in left[:20])
            more = f" and {len(left) - 20} more" if len(left) > 20 else ""
            message += f" Not live claims, left as they are: {shown}{more}."
        self.message_user(request, message, messages.SUCCESS if released else messages.WARNING)


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    """Reviews are read here, never written (DESIGN.md invariant 4): one made by hand would
    not be its assignment's, and one deleted would leave its assignment submitted, holding
    its slot. A lead's change of a verdict is a new, superseding row, made on the lead's page."""

    list_display = ["id", "campaign", "item", "expert", "verdict", "created_at"]
    list_filter = ["verdict", "campaign"]
    list_select_related = ["campaign", "item", "expert"]
    raw_id_fields = ["assignment", "item", "expert", "supersedes", "chosen", "correction_response"]
    show_full_result_count = False  # as for assignments

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Review | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Review | None = None) -> bool:
        return False
