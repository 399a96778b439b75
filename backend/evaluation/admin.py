"""Staff views of suites, scores, matches, rank snapshots and the verdict review.

Scores, matches and snapshots are derived from stored results, so they are read-only here;
"Recompute rankings" rebuilds them. A verdict's change page is its review page: approve
(optionally editing the text, with a note) or reject, through ``backend.evaluation.review``.
"""

import hashlib
import logging

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from backend.jobs.serializers import STANDIN_NOTE
from frontend.templatetags.versus import pretty_json

from .models import Match, ModelScore, RankSnapshot, Suite, SuiteItem, Verdict, VerdictState
from .review import ReviewConflict, approve_verdict, reject_verdict

logger = logging.getLogger(__name__)


def text_sha256(text):
    return hashlib.sha256((text or "").encode()).hexdigest()


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows computed by services: staff look, services write."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class SuiteItemInline(admin.TabularInline):
    model = SuiteItem
    extra = 0
    fields = ["position", "kind", "key", "prompt", "text", "category", "challenge", "license"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Suite)
class SuiteAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "item_count", "owner", "created_at"]
    search_fields = ["slug", "name"]
    readonly_fields = ["content_sha256", "created_at"]
    inlines = [SuiteItemInline]

    @admin.display(description="items")
    def item_count(self, suite):
        return suite.items.count()


@admin.register(SuiteItem)
class SuiteItemAdmin(admin.ModelAdmin):
    list_display = ["__str__", "kind", "category", "challenge"]
    list_filter = ["suite", "kind", "category"]
    search_fields = ["key", "prompt", "text"]


@admin.register(ModelScore)
class ModelScoreAdmin(ReadOnlyAdmin):
    list_display = ["rank", "model", "composite_display", "matches", "provisional", "standin", "updated_at"]
    list_filter = ["standin", "provisional", "model__task"]
    list_select_related = ["model"]
    ordering = ["rank", "model__slug"]
    actions = ["recompute_rankings"]

    @admin.display(description="composite", ordering="composite")
    def composite_display(self, score):
        return f"{score.composite:.1f}"

    # Scores have no change permission here (services write them); a recompute only
    # rebuilds them from stored results, so viewing them is enough to run it.
    @admin.action(description="Recompute rankings from all stored results", permissions=["view"])
    def recompute_rankings(self, request, queryset):
        from .services import recompute_rankings

        rows = recompute_rankings(reason=f"admin action by {request.user.get_username()}")
        self.message_user(request, f"Rankings recomputed for {len(rows)} model(s).", messages.SUCCESS)


@admin.register(Match)
class MatchAdmin(ReadOnlyAdmin):
    list_display = ["job", "item", "model_a", "model_b", "metric", "score_a", "score_b", "outcome"]
    list_filter = ["outcome", "metric"]
    list_select_related = ["model_a", "model_b", "item", "item__suite"]
    search_fields = ["model_a__slug", "model_b__slug"]


@admin.register(RankSnapshot)
class RankSnapshotAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "reason", "leader", "models"]
    readonly_fields = ["created_at", "reason", "content_sha256", "entries_json"]
    fields = readonly_fields

    @admin.display(description="leader")
    def leader(self, snapshot):
        top = [row["slug"] for row in snapshot.entries if row.get("rank") == 1]
        return ", ".join(top) or "—"

    @admin.display(description="models")
    def models(self, snapshot):
        return len(snapshot.entries)

    @admin.display(description="entries")
    def entries_json(self, snapshot):
        return format_html("<pre>{}</pre>", pretty_json(snapshot.entries))


class VerdictReviewForm(forms.Form):
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 6}), label="Published text",
        help_text="Shown on the public A-vs-B page. Edit it only with a review note.",
    )
    note = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), required=False, label="Review note",
        help_text="Required to reject or to edit the text; kept with the review, not published.",
    )
    generated_sha256 = forms.CharField(widget=forms.HiddenInput)
    decision = forms.ChoiceField(choices=[("Approve", "Approve"), ("Reject", "Reject")])

    def __init__(self, *args, verdict, **kwargs):
        super().__init__(*args, **kwargs)
        self.verdict = verdict

    def clean(self):
        data = super().clean()
        if data.get("generated_sha256") and data["generated_sha256"] != text_sha256(self.verdict.generated_text):
            raise forms.ValidationError(
                "A newer job regenerated this verdict while you reviewed it; review the new text below.")
        note = (data.get("note") or "").strip()
        edited = (data.get("text") or "").strip() != self.verdict.text.strip()
        if data.get("decision") == "Reject" and not note:
            self.add_error("note", "Write a note saying why the verdict is rejected.")
        if data.get("decision") == "Approve" and edited and not note:
            self.add_error("note", "You edited the text: write a note saying why.")
        return data


@admin.register(Verdict)
class VerdictAdmin(admin.ModelAdmin):
    list_display = ["pair", "state", "leader", "standin", "job", "reviewed_by", "reviewed_at", "updated_at"]
    list_filter = ["state", "model_a__task"]
    list_select_related = ["model_a", "model_b", "leader", "reviewed_by"]
    search_fields = ["model_a__slug", "model_b__slug", "text"]
    ordering = ["state", "-updated_at"]
    actions = ["approve_selected"]

    class Media:
        css = {"all": ["frontend/admin.css"]}

    def has_add_permission(self, request):
        return False

    @admin.display(description="pair", ordering="model_a__slug")
    def pair(self, verdict):
        return f"{verdict.model_a.slug} vs {verdict.model_b.slug}"

    @admin.display(description="stand-in", boolean=True)
    def standin(self, verdict):
        return bool(verdict.structured.get("standin"))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """Replace the generic edit form with the review page (approve or reject)."""
        verdict = self.get_object(request, object_id)
        if verdict is None:
            raise Http404(f"Verdict {object_id} not found.")
        if not self.has_view_or_change_permission(request, verdict):
            raise PermissionDenied
        can_review = self.has_change_permission(request, verdict)

        form = VerdictReviewForm(
            request.POST if request.method == "POST" else None, verdict=verdict,
            initial={"text": verdict.text, "generated_sha256": text_sha256(verdict.generated_text)},
        )
        if request.method == "POST":
            if not can_review:
                raise PermissionDenied
            if form.is_valid():
                response = self._apply_review(request, verdict, form)
                if response is not None:
                    return response

        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts, "title": f"Review verdict: {verdict}", "verdict": verdict, "form": form,
            "can_review": can_review, "media": self.media, "standin_note": STANDIN_NOTE,
            "public_url": reverse("frontend:compare", args=[verdict.model_a.slug, verdict.model_b.slug]),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/evaluation/verdict/review.html", context)

    def _apply_review(self, request, verdict, form):
        data = form.cleaned_data
        try:
            if data["decision"] == "Approve":
                approve_verdict(verdict, request.user, text=data["text"], note=data["note"])
                self.message_user(request, f"Verdict {verdict} approved and published.", messages.SUCCESS)
            else:
                reject_verdict(verdict, request.user, data["note"])
                self.message_user(request, f"Verdict {verdict} rejected.", messages.SUCCESS)
        except (ReviewConflict, ValueError) as exc:
            form.add_error(None, str(exc))
            return None
        outcome = "Approved" if data["decision"] == "Approve" else "Rejected"
        self.log_change(request, verdict, f"{outcome}: {data['note'] or 'no note'}")
        return HttpResponseRedirect(reverse("admin:evaluation_verdict_change", args=[verdict.pk]))

    @admin.action(description="Approve selected verdicts as generated", permissions=["change"])
    def approve_selected(self, request, queryset):
        approved = 0
        for verdict in queryset.filter(state__in=[VerdictState.DRAFT, VerdictState.REJECTED]):
            try:
                approve_verdict(verdict, request.user)
            except ReviewConflict as exc:
                self.message_user(request, str(exc), messages.WARNING)
                continue
            approved += 1
        skipped = queryset.count() - approved
        self.message_user(request, f"Approved {approved} verdict(s); {skipped} were already approved "
                                   "or changed meanwhile.", messages.SUCCESS)
