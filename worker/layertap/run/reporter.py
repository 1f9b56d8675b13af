"""The worker's side of the status contract: progress into the resource's `status.progress`.

Only process 0 reports. `update()` only records the latest numbers and returns at once; a
background thread sends them as a JSON merge patch through the status subresource, at most
once per `interval` seconds (the first at once), retrying conflicts and transient server
errors. Progress is best effort: a failing API server is logged, never raised into the run.
Outside a cluster (no resource name in the environment, or no in-cluster credentials)
`from_environment()` returns None and the run shows a progress bar only.

RBAC: the worker's ServiceAccount needs `get` and `patch` on `activationextractions/status`;
the chart's admission policy then admits the patch only with the pod's own token (bound to
a worker pod of this resource) and only for `progress` and `lastError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from layertap.environment import worker_environment
from layertap_api.resource import GROUP, PLURAL, VERSION
from layertap_api.status import ExtractionStatus, LastError, Progress

log = logging.getLogger(__name__)

RETRY_STATUSES = {409, 429, 500, 502, 503, 504}
ATTEMPTS = 4
REQUEST_TIMEOUT_S = 10
PROGRESS_FIELDS = frozenset(field.alias for field in Progress.model_fields.values())


class StatusReporter:
    def __init__(
        self, api: kubernetes.client.CustomObjectsApi, namespace: str, name: str, interval: float = 10.0
    ) -> None:
        self.api, self.namespace, self.name, self.interval = api, namespace, name, interval
        self._pending: dict = {}
        self._last_sent = -float("inf")
        self._closed = False
        self._disabled = False  # the resource is gone or we may not patch it
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str] | None = None,
        api: kubernetes.client.CustomObjectsApi | None = None,
        **kwargs,
    ) -> StatusReporter | None:
        """A reporter for the resource named in the environment; `api` defaults to a client
        with the pod's in-cluster credentials."""
        resource = worker_environment(environ).extraction
        if resource is None:
            return None
        if api is None:
            config = kubernetes.client.Configuration()
            try:
                kubernetes.config.load_incluster_config(client_configuration=config)
            except kubernetes.config.ConfigException as error:
                log.info("no in-cluster credentials (%s): progress goes to the log only", error)
                return None
            api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(config))
        namespace, name = resource
        return cls(api, namespace, name, **kwargs)

    def update(self, progress: Progress | dict) -> None:
        """Record the latest progress (the fields set in it; a dict: camelCase keys of
        status.progress); sent in the background."""
        if isinstance(progress, dict):
            unknown = set(progress) - PROGRESS_FIELDS
            if unknown:
                raise ValueError(f"status.progress has no field(s) {sorted(unknown)}")
            progress = Progress.model_validate(progress)
        with self._wake:
            self._pending.update({name: getattr(progress, name) for name in progress.model_fields_set})
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="layertap-status", daemon=True)
                self._thread.start()
            self._wake.notify()

    def close(self) -> None:
        """Send what is pending now and stop."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
        self._send(self._take())

    def _take(self) -> dict:
        with self._wake:
            pending, self._pending = self._pending, {}
            return pending

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._closed and (not self._pending or time.monotonic() - self._last_sent < self.interval):
                    timeout = self.interval - (time.monotonic() - self._last_sent) if self._pending else None
                    self._wake.wait(timeout)
                if self._closed:
                    return
            self._send(self._take())

    def report_error(self, message: str, pod: str | None = None) -> None:
        """Put why this worker fails into status.lastError, at once (one try: it is exiting)."""
        error = LastError(message=message[-4096:], pod=pod or None, time=datetime.now(UTC))
        try:
            self._patch(ExtractionStatus(last_error=error))
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as failure:
            log.warning("status.lastError of %s/%s not written: %s", self.namespace, self.name, failure)

    def _send(self, progress: dict) -> None:
        """Merge-patch the fields in `progress` (field name -> value, as the model holds them)."""
        if not progress or self._disabled:
            return
        self._last_sent = time.monotonic()
        progress = Progress.model_construct(**progress, update_time=datetime.now(UTC))
        for attempt in range(ATTEMPTS):
            try:
                self._patch(ExtractionStatus.model_construct(progress=progress))
                return
            except ApiException as error:
                if error.status in (403, 404):
                    log.warning(
                        "status of %s/%s: %s %s; no more progress reports",
                        self.namespace,
                        self.name,
                        error.status,
                        error.reason,
                    )
                    self._disabled = True
                    return
                if error.status not in RETRY_STATUSES or attempt == ATTEMPTS - 1:
                    log.warning(
                        "status of %s/%s not updated: %s %s", self.namespace, self.name, error.status, error.reason
                    )
                    return
            except (OSError, urllib3.exceptions.HTTPError) as error:
                if attempt == ATTEMPTS - 1:
                    log.warning("status of %s/%s not updated: %s", self.namespace, self.name, error)
                    return
            time.sleep(0.2 * 2**attempt)

    def _patch(self, status: ExtractionStatus) -> None:
        """Merge-patch the fields set in `status` (None set: removed) through the status subresource."""
        body = {"status": status.model_dump(mode="json", by_alias=True, exclude_unset=True)}
        self.api.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, self.name, body, _request_timeout=REQUEST_TIMEOUT_S
        )
