from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from feedback import health, views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", health.healthz, name="healthz"),
    path("invite/<str:token>/", views.invitation_landing, name="invitation"),
    path("accounts/", include("allauth.urls")),
    path("admin/", admin.site.urls),
    path("review/", include("reviews.urls")),
    path("datasets/", include("datasets_app.urls")),
    path("api/v1/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "api/v1/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"
    ),
    path("api/v1/", include("feedback.api_urls")),
]

# A path no view matches, a request refused before its view: JSON under /api/ (and, for a 400,
# the endpoints only scripts call), the usual page elsewhere.
handler404 = "feedback.api_paths.not_found"
handler400 = "feedback.api_paths.bad_request"
handler500 = "feedback.api_paths.server_error"
