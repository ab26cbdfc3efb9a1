"""The AIS question catalogue: six DESIGN.md categories, each with forms at three difficulty
levels, seeded from the facts. Importing this package registers every category module."""

from tasks.catalogue import base  # noqa: F401
from tasks.catalogue import anomalies, identity, movement, port_activity, safety, traffic  # noqa: F401  (registration)
from tasks.catalogue.base import BUILDERS, FORMS, RENDERERS  # noqa: F401
