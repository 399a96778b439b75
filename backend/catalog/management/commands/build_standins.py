from django.core.management.base import BaseCommand

from backend.catalog.actions import build_standins


class Command(BaseCommand):
    help = ("Build random-weight stand-in checkpoints (real architectures, tiny configs) for "
            "catalog entries without a local checkpoint. Existing complete folders are kept.")

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Rebuild even complete folders.")

    def handle(self, *args, force, **options):
        for slug, path in build_standins(force=force).items():
            self.stdout.write(f"{slug}: {path}")
