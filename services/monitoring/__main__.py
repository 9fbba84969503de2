"""``python -m services.monitoring``: run the monitoring service."""

from services.monitoring.service import run

run()
