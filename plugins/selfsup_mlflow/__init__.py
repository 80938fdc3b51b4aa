"""MLflow tracking for selfsup runs, from the lifecycle hooks (opt in with ``SELFSUP_MLFLOW=1``)."""
