"""``python -m services.labeling``: run the labeling service."""

from services.labeling.service import run

run()
