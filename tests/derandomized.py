"""The settings the derandomized property tests share: the same examples on every run (in CI
and on a developer's machine), no deadline (examples start processes and compile), no
example database, and module-scoped fixtures used across examples. Each test sets its own
max_examples on top: `@settings(DERANDOMIZED, max_examples=60)`."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

DERANDOMIZED = settings(
    derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
