"""``python -m services.ingest``: run the ingest service."""

from services.core.runtime import main
from services.ingest.service import run

main(run)
