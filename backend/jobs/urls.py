from django.urls import path
from knox import views as knox_views
from rest_framework.authentication import BasicAuthentication

from backend.api.throttles import check_login_throttle

from . import views


class LoginView(knox_views.LoginView):
    """Exchange a username and password (HTTP Basic) for an API token."""

    authentication_classes = [BasicAuthentication]

    def perform_authentication(self, request):
        # A wrong password raises 401 during authentication, before DRF checks throttles,
        # so password guessing is throttled here first.
        check_login_throttle(self, request)
        super().perform_authentication(request)


urlpatterns = [
    path("auth/login/", LoginView.as_view(), name="knox-login"),
    path("auth/logout/", knox_views.LogoutView.as_view(), name="knox-logout"),
    path("auth/logoutall/", knox_views.LogoutAllView.as_view(), name="knox-logoutall"),
    path("comparisons/", views.ComparisonCreateView.as_view(), name="comparison-create"),
    path("jobs/", views.JobListView.as_view(), name="job-list"),
    path("jobs/<uuid:job_id>/", views.JobDetailView.as_view(), name="job-detail"),
    path("jobs/<uuid:job_id>/cancel/", views.JobCancelView.as_view(), name="job-cancel"),
    path("jobs/<uuid:job_id>/rerun/", views.JobRerunView.as_view(), name="job-rerun"),
    path("jobs/<uuid:job_id>/results/", views.JobResultsView.as_view(), name="job-results"),
    path("models/", views.ModelListView.as_view(), name="model-list"),
    path("models/<str:slug>/", views.ModelDetailView.as_view(), name="model-detail"),
    path("rankings/", views.RankingListView.as_view(), name="ranking-list"),
    path("verdicts/", views.VerdictListView.as_view(), name="verdict-list"),
]
