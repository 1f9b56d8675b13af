"""The operator's contract as this process sees it: `layertap_api.contract`, read from the
environment, with a bad value turned into a LayerTapError the user can act on."""

from __future__ import annotations

import os
from collections.abc import Mapping

from layertap.errors import LayerTapError
from layertap_api.contract import ContractError, WorkerEnvironment


def worker_environment(env: Mapping[str, str] | None = None) -> WorkerEnvironment:
    """What the operator put into this pod's environment (nothing, outside a cluster)."""
    try:
        return WorkerEnvironment.parse(os.environ if env is None else env)
    except ContractError as error:
        raise LayerTapError(str(error)) from None
