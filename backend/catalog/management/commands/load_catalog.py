from django.core.management.base import BaseCommand, CommandError

from backend.catalog.actions import DEFAULT_CATALOG, import_catalog


class Command(BaseCommand):
    help = "Create or update catalog entries from a JSON file (default: the bundled catalog)."

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", default=str(DEFAULT_CATALOG))

    def handle(self, *args, path, **options):
        try:
            entries = import_catalog(path)
        except (OSError, ValueError, KeyError) as exc:
            raise CommandError(f"could not import catalog from {path}: {exc}") from exc
        self.stdout.write(f"{len(entries)} catalog entries loaded from {path}")
