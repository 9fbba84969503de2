"""``python -m services.serving``: run the serving service."""

from services.core.runtime import main
from services.serving.service import run

main(run)
