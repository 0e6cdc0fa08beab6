"""HTTP ingestion: auth, parsing, validation, enrichment and group commit into the gateway queue."""
