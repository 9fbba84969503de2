"""``python -m services.labeling``: run the labeling service."""

from services.core.runtime import main
from services.labeling.service import run

main(run)
