from django.contrib import admin

from datasets_app.models import Dataset, DatasetVersion


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "format", "aggregation", "owner", "created_at"]


@admin.register(DatasetVersion)
class DatasetVersionAdmin(admin.ModelAdmin):
    list_display = ["dataset", "number", "status", "content_hash", "created_at", "finished_at"]
    readonly_fields = [f.name for f in DatasetVersion._meta.fields]
