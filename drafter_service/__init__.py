"""drafter_service: drafters (one registry, `drafter_service.base`) and the service that speculates with them.

Importing the package registers every built-in drafter kind (`drafter_service.kinds`).
"""

from drafter_service import kinds  # noqa: F401  (registers every kind)
