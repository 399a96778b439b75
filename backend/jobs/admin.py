"""Staff view of jobs: list with progress, per-batch timings, the results gallery and actions.

Jobs are written only by ``backend.jobs.actions``, so every field here is read-only and
each admin action calls one action function.
"""

import logging
import re
import uuid

from django.contrib import admin, messages
from django.db.models import CharField, Value
from django.db.models.functions import Cast, Replace
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from backend.api.errors import ApiError
from backend.catalog.models import ModelEntry
from frontend.gallery import build_gallery
from frontend.panels import render_job_panels
from frontend.templatetags.versus import pretty_json, seconds

from . import actions
from .models import Batch, Job, JobKind

logger = logging.getLogger(__name__)

# Searching for the start of a job id (as the short ids in the list show it).
ID_PREFIX = re.compile(r"^[0-9a-fA-F-]{4,36}$")
ADMIN_MEDIA_CSS = {"all": ["frontend/gallery.css", "frontend/admin.css"]}


def progress_bar(job):
    """HTML progress bar of a job's items, coloured by state."""
    percent = round(100 * job.progress_fraction, 1)
    return format_html(
        '<span class="vs-progress" title="{} of {} items"><span class="fill state-{}" style="width: {}%">'
        "</span></span><span class=\"vs-progress-text\">{}/{}</span>",
        job.progress_done, job.progress_total, job.state, f"{percent:.1f}", job.progress_done,
        job.progress_total,
    )


class BatchInline(admin.TabularInline):
    model = Batch
    extra = 0
    can_delete = False
    show_change_link = False
    fields = ["index", "model", "state", "size", "attempts", "worker", "load_time", "wall_time",
              "inference_time", "peak_memory", "device", "error"]
    readonly_fields = fields
    ordering = ["index"]

    def has_add_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        # Batches belong to their job, so a user who can view the job can view its batches.
        return request.user.has_perm("jobs.view_job") or request.user.has_perm("jobs.change_job")

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("model")

    @admin.display(description="load")
    def load_time(self, batch):
        return seconds((batch.report or {}).get("load_time_s"))

    @admin.display(description="wall time")
    def wall_time(self, batch):
        return seconds((batch.report or {}).get("wall_time_s"))

    @admin.display(description="inference")
    def inference_time(self, batch):
        return seconds((batch.report or {}).get("inference_time_s"))

    @admin.display(description="peak memory")
    def peak_memory(self, batch):
        value = (batch.report or {}).get("peak_memory_bytes")
        return filesizeformat(value) if value else "—"

    @admin.display(description="device")
    def device(self, batch):
        report = batch.report or {}
        return " ".join(str(part) for part in (report.get("device"), report.get("dtype")) if part) or "—"


class ModelListFilter(admin.SimpleListFilter):
    """Jobs that include a given catalog entry."""

    title = "model"
    parameter_name = "model"

    def lookups(self, request, model_admin):
        return [(entry.slug, entry.slug) for entry in ModelEntry.objects.filter(jobs__isnull=False).distinct()]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(entries__slug=self.value())
        return queryset


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["short_id", "kind", "models", "state_badge", "progress", "owner", "created_at", "duration"]
    list_filter = ["state", "kind", ModelListFilter, ("created_at", admin.DateFieldListFilter)]
    list_select_related = ["owner"]
    date_hierarchy = "created_at"
    search_fields = ["entries__slug", "owner__username"]
    search_help_text = "Search by job id (or its first characters), model slug or submitter."
    ordering = ["-created_at"]
    inlines = [BatchInline]
    change_form_template = "admin/jobs/job/change_form.html"
    readonly_fields = [
        "id", "kind", "state", "owner", "models", "suite", "progress", "cancel_requested", "standin",
        "created_at", "started_at", "finished_at", "heartbeat_at", "duration", "options_json",
        "error", "batch_errors", "metrics_json",
    ]
    fieldsets = [
        (None, {"fields": ["id", "kind", "state", "owner", "models", "suite", "progress",
                           "cancel_requested", "standin"]}),
        ("Timing", {"fields": ["created_at", "started_at", "finished_at", "heartbeat_at", "duration"]}),
        ("Options", {"fields": ["options_json"]}),
        ("Errors", {"fields": ["error", "batch_errors"]}),
        ("Metrics per model", {"fields": ["metrics_json"], "classes": ["collapse"]}),
    ]
    actions = ["cancel_jobs", "retry_failed_batches", "rerun_jobs", "recompute_rankings"]

    class Media:
        css = ADMIN_MEDIA_CSS

    def has_add_permission(self, request):
        return False

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if not ID_PREFIX.match(term):
            return results, may_have_duplicates
        try:
            by_id = queryset.filter(pk=uuid.UUID(term))
        except ValueError:
            # A partial id. PostgreSQL renders a uuid as text with hyphens and SQLite stores
            # 32 hex digits, so both sides are compared without hyphens.
            id_hex = Replace(Cast("id", CharField()), Value("-"), Value(""))
            by_id = queryset.annotate(id_hex=id_hex).filter(id_hex__startswith=term.replace("-", "").lower())
        return results | queryset.filter(pk__in=by_id.values("pk")), True

    @admin.display(description="job", ordering="created_at")
    def short_id(self, job):
        return str(job.id)[:8]

    @admin.display(description="models")
    def models(self, job):
        return format_html_join(format_html("<br>"), '<span class="vs-nowrap">{}</span>',
                                ((slug,) for slug in job.model_order))

    @admin.display(description="state", ordering="state")
    def state_badge(self, job):
        return format_html('<span class="badge state state-{}">{}</span>', job.state, job.get_state_display())

    @admin.display(description="progress")
    def progress(self, job):
        return progress_bar(job)

    @admin.display(description="duration")
    def duration(self, job):
        return seconds(job.duration_s)

    @admin.display(description="options")
    def options_json(self, job):
        return format_html("<pre>{}</pre>", pretty_json(job.options))

    @admin.display(description="metrics")
    def metrics_json(self, job):
        return format_html("<pre>{}</pre>", pretty_json(job.metrics)) if job.metrics else "—"

    @admin.display(description="batch errors")
    def batch_errors(self, job):
        failed = job.batches.exclude(error="").select_related("model").order_by("index")
        if not failed:
            return "—"
        return format_html("<ul>{}</ul>", format_html_join(
            "", "<li>batch {} ({}, {}, attempt {}): {}</li>",
            ((b.index, b.model.slug, b.state, b.attempts, b.error) for b in failed),
        ))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        job = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if job is not None:
            extra_context.update(
                gallery=build_gallery(job),
                manifest=pretty_json(job.manifest) if job.manifest else "",
                panels=render_job_panels(job, admin=True),
                public_url=f"/jobs/{job.id}/",
            )
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_jobs(self, request, queryset):
        cancelled = 0
        for job in queryset:
            try:
                actions.cancel_job(job)
                cancelled += 1
            except ApiError as exc:
                self.message_user(request, str(exc.detail), messages.WARNING)
        if cancelled:
            self.message_user(request, f"Cancelled {cancelled} job(s).", messages.SUCCESS)

    @admin.action(description="Retry failed batches of selected jobs", permissions=["change"])
    def retry_failed_batches(self, request, queryset):
        for job in queryset:
            try:
                count = actions.retry_failed_batches(job)
            except ApiError as exc:
                self.message_user(request, str(exc.detail), messages.WARNING)
                continue
            self.message_user(request, f"Job {job.id}: requeued {count} batch(es).", messages.SUCCESS)

    @admin.action(description="Re-run selected comparisons (same models, suite and options)", permissions=["change"])
    def rerun_jobs(self, request, queryset):
        for job in queryset:
            if job.kind != JobKind.COMPARISON or job.suite_id is None:
                self.message_user(request, f"Job {job.id} is not a comparison with a suite; "
                                           "only comparisons can be re-run.", messages.WARNING)
                continue
            try:
                new_job = actions.rerun_comparison(job, job.owner or request.user)
            except ApiError as exc:
                self.message_user(request, f"Job {job.id}: {exc.detail}", messages.WARNING)
                continue
            self.message_user(request, format_html(
                'Job {} re-run as <a href="{}">{}</a>.', str(job.id)[:8],
                reverse("admin:jobs_job_change", args=[new_job.id]), new_job.id), messages.SUCCESS)

    @admin.action(description="Recompute rankings from all stored results", permissions=["change"])
    def recompute_rankings(self, request, queryset):
        from backend.evaluation.services import recompute_rankings

        rows = recompute_rankings(reason=f"admin action by {request.user.get_username()}")
        self.message_user(request, f"Rankings recomputed for {len(rows)} model(s).", messages.SUCCESS)


__all__ = ["BatchInline", "JobAdmin", "progress_bar"]
