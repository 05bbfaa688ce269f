from django.urls import path

from reviews import views

urlpatterns = [
    path("<int:campaign_id>/start/", views.start, name="review-start"),
    path("a/<int:assignment_id>/", views.review_page, name="review-page"),
    path("a/<int:assignment_id>/submit/", views.review_submit, name="review-submit"),
    path("a/<int:assignment_id>/skip/", views.review_skip, name="review-skip"),
]
