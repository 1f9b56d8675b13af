"""What an ActivationExtraction may ask for: the chart's `policy` values. Pure.

The chart gives the same values twice: to the API server, as a ValidatingAdmissionPolicy that
refuses such a resource at `kubectl apply` (templates/policy/admission.yaml), and to the
operator, as JSON in `LAYERTAP_POLICY`, which checks them again before it makes a JobSet
(defence in depth: a resource admitted before the policy was installed or tightened, or a
cluster without the admission policy). The messages of both name the value to change.

Without `LAYERTAP_POLICY` the operator holds the chart's defaults, the strictest policy:
nothing privileged, the default image only, the default worker ServiceAccount, no Secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from layertap_api.resource import ActivationExtractionSpec

ENV_POLICY = "LAYERTAP_POLICY"
DEFAULT_SERVICE_ACCOUNT = ActivationExtractionSpec.model_fields["service_account_name"].default


@dataclass(frozen=True)
class Policy:
    allow_privileged: bool = False
    image_prefixes: tuple[str, ...] = ()  # empty: spec.image unset (the operator's default image) only
    service_accounts: tuple[str, ...] = (DEFAULT_SERVICE_ACCOUNT,)
    hub_token_secrets: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, text: str) -> Policy:
        """The policy as the chart writes it: {"allowPrivileged", "allowedImagePrefixes",
        "allowedServiceAccounts", "allowedHubTokenSecrets"}; a missing key keeps its default."""
        try:
            values = json.loads(text)
            if not isinstance(values, dict):
                raise TypeError("not a JSON object")
            default = cls()
            return cls(
                allow_privileged=_bool(values.get("allowPrivileged", default.allow_privileged)),
                image_prefixes=_names(values.get("allowedImagePrefixes", default.image_prefixes)),
                service_accounts=_names(values.get("allowedServiceAccounts", default.service_accounts)),
                hub_token_secrets=_names(values.get("allowedHubTokenSecrets", default.hub_token_secrets)),
            )
        except (TypeError, ValueError) as error:
            raise ValueError(f"{ENV_POLICY} is not the chart's policy JSON ({error}): {text[:200]}") from None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Policy:
        text = environ.get(ENV_POLICY)
        return cls.from_json(text) if text else cls()


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"allowPrivileged must be true or false, not {value!r}")
    return value


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"expected a list of strings, not {value!r}")
    return tuple(value)


def _allowed(names: tuple[str, ...]) -> str:
    return ", ".join(names) if names else "none"


def violations(spec: ActivationExtractionSpec, policy: Policy) -> list[str]:
    """What `spec` asks for beyond `policy`, one line each naming the chart value that would allow it."""
    found = []
    if spec.privileged and not policy.allow_privileged:
        found.append("spec.privileged: privileged workers are not allowed (the chart's policy.allowPrivileged)")
    if spec.image is not None and not spec.image.startswith(policy.image_prefixes):
        found.append(
            f"spec.image {spec.image}: not an allowed image; leave it unset for the operator's default, or use one "
            f"starting with: {_allowed(policy.image_prefixes)} (the chart's policy.allowedImagePrefixes)"
        )
    if spec.service_account_name not in policy.service_accounts:
        found.append(
            f"spec.serviceAccountName {spec.service_account_name}: not an allowed ServiceAccount; allowed: "
            f"{_allowed(policy.service_accounts)} (the chart's worker.serviceAccount.name and "
            "policy.allowedServiceAccounts)"
        )
    secret = spec.hub_token_secret
    if secret is not None and secret.name not in policy.hub_token_secrets:
        found.append(
            f"spec.hubTokenSecret.name {secret.name}: not an allowed Secret; allowed: "
            f"{_allowed(policy.hub_token_secrets)} (the chart's policy.allowedHubTokenSecrets)"
        )
    return found
