"""``python -m services.training``: run the training service."""

from services.training.service import run

run()
