"""hostd: the Insights host daemon (supervisor, broker, event log, HTTP API, CLI)."""
