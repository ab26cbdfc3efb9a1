"""The tiny student of the train/evaluate tests: its chat template is the deployment format the
abuse tests render examples through."""

from tests.tasks.conftest import chat_dataset, tiny_student  # noqa: F401  (fixtures, by name)
