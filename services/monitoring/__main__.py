"""``python -m services.monitoring``: run the monitoring service."""

from services.core.runtime import main
from services.monitoring.service import run

main(run)
