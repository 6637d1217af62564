"""The bottom layer: what every part shares (settings, TLS, rate limiting, logs, crash-safe files)."""
