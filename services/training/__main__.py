"""``python -m services.training``: run the training service."""

from services.core.runtime import main
from services.training.service import run

main(run)
