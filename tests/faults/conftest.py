"""Fixtures of the fault suite: the session's Prefect server URL for runs in subprocesses."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def api_url(prefect_server):
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()
