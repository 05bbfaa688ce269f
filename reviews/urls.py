from django.urls import path

from reviews import views

urlpatterns = [
    path("<int:campaign_id>/start/", views.start, name="review-start"),
    path("a/<int:assignment_id>/", views.review_page, name="review-page"),
    path("a/<int:assignment_id>/submit/", views.review_submit, name="review-submit"),
    path("a/<int:assignment_id>/skip/", views.review_skip, name="review-skip"),
    path("a/<int:assignment_id>/draft/", views.review_draft, name="review-draft"),
    path("history/", views.history, name="review-history"),
    path("campaigns/<int:campaign_id>/reviews/", views.campaign_reviews, name="campaign-reviews"),
]
