from django.urls import path

from datasets_app import api as datasets_api
from feedback import api as feedback_api
from reviews import api as reviews_api

urlpatterns = [
    path("campaigns/", feedback_api.CampaignListView.as_view(), name="api-campaigns"),
    path(
        "campaigns/<int:campaign_id>/",
        feedback_api.CampaignDetailView.as_view(),
        name="api-campaign",
    ),
    path(
        "campaigns/<int:campaign_id>/items/",
        feedback_api.ItemsCreateView.as_view(),
        name="api-items",
    ),
    path("campaigns/<int:campaign_id>/next/", reviews_api.NextView.as_view(), name="api-next"),
    path(
        "assignments/<int:assignment_id>/submit/",
        reviews_api.SubmitView.as_view(),
        name="api-submit",
    ),
    path("assignments/<int:assignment_id>/skip/", reviews_api.SkipView.as_view(), name="api-skip"),
    path(
        "assignments/<int:assignment_id>/heartbeat/",
        reviews_api.HeartbeatView.as_view(),
        name="api-heartbeat",
    ),
    path(
        "campaigns/<int:campaign_id>/imports/",
        feedback_api.ImportListCreateView.as_view(),
        name="api-imports",
    ),
    path("imports/<int:import_id>/", feedback_api.ImportDetailView.as_view(), name="api-import"),
    path(
        "campaigns/<int:campaign_id>/generate/",
        feedback_api.GenerateView.as_view(),
        name="api-generate",
    ),
    path(
        "generations/<int:generation_id>/",
        feedback_api.GenerationDetailView.as_view(),
        name="api-generation",
    ),
    path("images/<int:image_id>/", reviews_api.ImageView.as_view(), name="api-image"),
    path("datasets/", datasets_api.DatasetListView.as_view(), name="api-datasets"),
    path(
        "datasets/<int:dataset_id>/", datasets_api.DatasetDetailView.as_view(), name="api-dataset"
    ),
    path(
        "datasets/<int:dataset_id>/versions/",
        datasets_api.VersionListView.as_view(),
        name="api-dataset-versions",
    ),
    path(
        "datasets/<int:dataset_id>/versions/<int:number>/diff/<int:other>/",
        datasets_api.VersionDiffView.as_view(),
        name="api-dataset-version-diff",
    ),
    path(
        "datasets/<int:dataset_id>/versions/<int:number>/",
        datasets_api.VersionDetailView.as_view(),
        name="api-dataset-version",
    ),
    path(
        "datasets/<int:dataset_id>/versions/<int:number>/files/<path:path>",
        datasets_api.VersionFileView.as_view(),
        name="api-dataset-file",
    ),
]
