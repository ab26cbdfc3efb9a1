"""tidewright Prefect flows: wiring only."""
