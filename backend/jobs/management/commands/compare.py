"""``manage.py compare SLUG SLUG ... [--suite sample] [--limit N] [--wait]``."""

from django.core.management.base import BaseCommand, CommandError
from rest_framework.exceptions import ValidationError

from backend.api.errors import ApiError
from backend.evaluation.models import ModelScore
from backend.jobs import actions
from backend.jobs.cli import command_user, flatten_errors, follow_progress, render_report
from backend.jobs.models import Job
from backend.jobs.serializers import ComparisonRequestSerializer, JobSerializer, RankingSerializer


class Command(BaseCommand):
    help = ("Submit a comparison job of two or more catalog models. The job runs on the Celery "
            "workers; start one with `celery -A backend worker -Q gpu,default`.")

    def add_arguments(self, parser):
        parser.add_argument("models", nargs="+", help="Catalog slugs, at least two.")
        parser.add_argument("--suite", default="sample", help="Suite slug (default: sample).")
        parser.add_argument("--limit", type=int, help="Sample at most N items of each kind.")
        parser.add_argument("--seed", type=int, help="Sampling and generation seed (default 0).")
        parser.add_argument("--batch-size", type=int, help="Items per batch task.")
        parser.add_argument("--user", default=None,
                            help="Username that owns the job (default: the first superuser).")
        parser.add_argument("--wait", action="store_true",
                            help="Show a progress bar until the job ends, then print the report.")
        parser.add_argument("--timeout", type=float, default=None, help="Seconds to wait at most.")

    def handle(self, *args, **opts):
        owner = command_user(opts["user"])
        options = {key: opts[key] for key in ("limit", "seed", "batch_size") if opts[key] is not None}
        serializer = ComparisonRequestSerializer(
            data={"models": opts["models"], "suite": opts["suite"], "options": options})
        try:
            serializer.is_valid(raise_exception=True)
            data = serializer.validated_data
            job = actions.submit_comparison(owner, data["models"], data["suite"], data["options"])
        except ValidationError as exc:
            raise CommandError(flatten_errors(exc.detail)) from exc
        except ApiError as exc:
            raise CommandError(str(exc.detail)) from exc

        self.stdout.write(f"Submitted job {job.id} ({job.progress_total} items).")
        if not opts["wait"]:
            return

        def fetch():
            return JobSerializer(Job.objects.get(pk=job.id)).data

        final = follow_progress(fetch, timeout=opts["timeout"], stream=self.stderr._out)
        rankings = RankingSerializer(ModelScore.objects.select_related("model").order_by("rank"), many=True).data
        render_report(final, rankings, final["verdicts"], self.stdout.write)
        if final["state"] != "succeeded":
            raise CommandError(f"job {job.id} ended {final['state']}: {final['error']}")
