"""``python -m services.ingest``: run the ingest service."""

from services.ingest.service import run

run()
