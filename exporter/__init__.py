"""synthbrew-exporter: Synthbrew usage and billing analytics for Prometheus, Grafana and SQL."""

__version__ = "0.1.0"
