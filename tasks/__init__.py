"""tidewright stages: one module per stage, plain functions plus thin Prefect @task wrappers."""
