from django.contrib import admin
from django.http import HttpRequest

from reviews.models import Assignment, Review


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "item", "expert", "status", "claimed_at", "lease_expires_at"]
    list_filter = ["status", "campaign"]
    list_select_related = ["campaign", "item", "expert"]
    raw_id_fields = ["item", "expert"]


@admin.register(Review)
class ReviewAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "item", "expert", "verdict", "created_at"]
    list_filter = ["verdict", "campaign"]
    list_select_related = ["campaign", "item", "expert"]
    raw_id_fields = ["assignment", "item", "expert", "supersedes", "chosen", "correction_response"]

    def has_change_permission(self, request: HttpRequest, obj: Review | None = None) -> bool:
        # A submitted review is never edited; a lead's change is a new, superseding row.
        return False
