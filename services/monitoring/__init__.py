"""monitoring: concept and data drift detection on ``drift``, and rolling KPIs for Prometheus."""
