"""The origin: its store, event sinks, credentials, signing keys and HTTP service."""
