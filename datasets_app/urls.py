from django.urls import path

from datasets_app import views

urlpatterns = [
    path("", views.datasets_page, name="datasets-page"),
    path("<int:dataset_id>/", views.dataset_page, name="dataset-page"),
    path("<int:dataset_id>/build/", views.dataset_build, name="dataset-build"),
]
