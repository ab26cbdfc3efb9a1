"""tidewright Prefect flows: wiring only."""

import os

# offline by default however a flow is started (CLI, `python -m flows.refresh`, a worker):
# Prefect's temporary server sends no analytics
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
