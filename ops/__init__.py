"""The operator surface: the sluice CLI, replay, job inspection, admin HTTP API."""
