from django.urls import path

from . import views

urlpatterns = [
    path("datasets/", views.DatasetListCreateView.as_view(), name="dataset-list"),
    path("datasets/<uuid:dataset_id>/", views.DatasetDetailView.as_view(), name="dataset-detail"),
    path("finetunes/", views.FinetuneListCreateView.as_view(), name="finetune-list"),
    path("finetunes/<uuid:job_id>/", views.FinetuneDetailView.as_view(), name="finetune-detail"),
    path("finetunes/<uuid:job_id>/loss/", views.FinetuneLossView.as_view(), name="finetune-loss"),
]
