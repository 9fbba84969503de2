"""``python -m services.serving``: run the serving service."""

from services.serving.service import run

run()
