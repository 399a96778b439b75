from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "backend.evaluation"
    label = "evaluation"
