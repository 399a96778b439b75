from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import path, re_path

from . import views

app_name = "frontend"

urlpatterns = [
    path("", views.leaderboard, name="leaderboard"),
    path("compare/<str:slug_a>/<str:slug_b>/", views.compare, name="compare"),
    path("models/<str:slug>/", views.model_detail, name="model"),
    path("jobs/<uuid:job_id>/", views.job_detail, name="job"),
    path("jobs/<uuid:job_id>/progress.json", views.job_progress, name="job-progress"),
    path("jobs/<uuid:job_id>/results/", views.job_gallery, name="job-gallery"),
    path("login/", auth_views.LoginView.as_view(template_name="frontend/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="/"), name="logout"),
]

# Static files (the pages' CSS and JS, the admin's) come from the app folders through
# Django's finders unless a front server serves STATIC_ROOT; runserver only serves them
# itself with DEBUG on. Set the Django setting VERSUS_SERVE_STATIC to False when a front server
# serves them.
if getattr(settings, "VERSUS_SERVE_STATIC", True) and not settings.DEBUG:
    urlpatterns.append(
        re_path(r"^%s(?P<path>.*)$" % settings.STATIC_URL.lstrip("/"), serve_static, {"insecure": True}),
    )
