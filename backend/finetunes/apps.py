from django.apps import AppConfig


class FinetunesConfig(AppConfig):
    name = "backend.finetunes"
    label = "finetunes"
