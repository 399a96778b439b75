from django.core.management.base import BaseCommand

from backend.evaluation.suites import install_bundled_suites


class Command(BaseCommand):
    help = "Install the bundled evaluation suites (sample, partiprompts); idempotent."

    def handle(self, *args, **options):
        for suite in install_bundled_suites():
            self.stdout.write(f"{suite.slug}: {suite.items.count()} items")
