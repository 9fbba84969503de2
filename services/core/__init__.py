"""What every service shares: settings, Kafka I/O, Redis, registry, metrics, logs, the CLI."""
