from django.urls import path

from . import views

urlpatterns = [
    path("suites/", views.SuiteListCreateView.as_view(), name="suite-list"),
    path("suites/<slug:slug>/", views.SuiteDetailView.as_view(), name="suite-detail"),
    path("rankings/history/", views.RankHistoryView.as_view(), name="ranking-history"),
    path("matches/graph/", views.MatchGraphView.as_view(), name="match-graph"),
    path("metrics/", views.MetricListView.as_view(), name="metric-list"),
]
