from django.apps import AppConfig


class FinetunesConfig(AppConfig):
    name = "backend.finetunes"
    label = "finetunes"

    def ready(self):
        from frontend.panels import register_job_panel

        from .panels import render_loss_curve

        register_job_panel("finetune", render_loss_curve)
