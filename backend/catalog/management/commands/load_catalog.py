from django.core.management.base import BaseCommand, CommandError

from backend.catalog.actions import DEFAULT_CATALOG, import_catalog


class Command(BaseCommand):
    help = ("Create catalog entries from a JSON file (default: the bundled catalog). Existing "
            "entries keep their values unless --update is given.")

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", default=str(DEFAULT_CATALOG))
        parser.add_argument("--update", action="store_true",
                            help="Overwrite existing entries with the file's values.")

    def handle(self, *args, path, update, **options):
        try:
            entries = import_catalog(path, update=update)
        except (OSError, ValueError, KeyError) as exc:
            raise CommandError(f"could not import catalog from {path}: {exc}") from exc
        self.stdout.write(f"{len(entries)} catalog entries loaded from {path}")
