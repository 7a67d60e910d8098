"""The ``none`` executor: records submissions and runs nothing (``FACTEUR_DISABLE_DISPATCHER=1``)."""

from __future__ import annotations

from facteur.errors import ExecutorError
from facteur.executors.port import Submission, WorkflowPhase, WorkflowRef, WorkflowRequest, WorkflowStatus


class NoneExecutor:
    kind = "none"
    namespace = "none"

    def __init__(self) -> None:
        self._submitted: dict[str, WorkflowRequest] = {}
        self._cancelled: set[str] = set()

    @property
    def submitted(self) -> dict[str, WorkflowRequest]:
        """Every workflow submitted to this executor, by name (what an operator would inspect)."""
        return dict(self._submitted)

    @property
    def cancelled(self) -> frozenset[str]:
        """The names of the workflows asked to stop."""
        return frozenset(self._cancelled)

    async def submit(self, request: WorkflowRequest) -> Submission:
        existing = self._submitted.get(request.name)
        if existing is not None and existing.run_id != request.run_id:
            raise ExecutorError(f"workflow {request.name} belongs to run {existing.run_id}")
        created = existing is None
        self._submitted.setdefault(request.name, request)
        return Submission(WorkflowRef(self.kind, self.namespace, request.name), created=created)

    async def status(self, ref: WorkflowRef) -> WorkflowStatus:
        if ref.name in self._cancelled:
            return WorkflowStatus(phase=WorkflowPhase.CANCELLED)
        # Nothing runs, so a submitted workflow stays pending; after a restart the name is simply unknown.
        if ref.name in self._submitted:
            return WorkflowStatus(phase=WorkflowPhase.PENDING, message="the none executor runs nothing")
        return WorkflowStatus(phase=WorkflowPhase.NOT_FOUND)

    async def cancel(self, ref: WorkflowRef) -> None:
        if ref.name in self._submitted:
            self._cancelled.add(ref.name)

    async def aclose(self) -> None:
        return None
