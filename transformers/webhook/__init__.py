"""Generic webhook: the event as JSON to a configured URL."""
