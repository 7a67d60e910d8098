"""The exception hierarchy: one root, specific subclasses, messages written for people.

Driver exceptions never cross a port: adapters translate them into these classes.
"""

from __future__ import annotations


class FacteurError(Exception):
    """Something went wrong in Facteur."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(FacteurError):
    """The configuration is invalid."""


class InvalidInput(FacteurError):
    """The input could not be accepted."""


class InvalidPayload(InvalidInput):
    """The payload could not be decoded."""


class NotFound(FacteurError):
    """The requested record does not exist."""


class Conflict(FacteurError):
    """The request conflicts with what exists (a duplicate, or a record in the wrong state)."""


class StoreError(FacteurError):
    """The store failed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached."""


class SchemaNotReady(StoreUnavailable):
    """The store's schema is not at the expected migration."""


class ExecutorError(FacteurError):
    """The executor failed to act on a workflow."""


class ExecutorUnavailable(ExecutorError):
    """The executor cannot be reached."""


class WorkflowRefused(ExecutorError):
    """The executor can never run this workflow as it is (submitting it again would not help)."""


class BusError(FacteurError):
    """The message bus failed."""


class BusUnavailable(BusError):
    """The message bus cannot be reached."""


class CommitFailed(BusError):
    """A consumer could not commit its offset."""


class ForgeError(FacteurError):
    """The forge (GitHub, or the local forge) refused or failed a call."""


class ForgeNotFound(ForgeError):
    """The forge has no such repository, issue, comment, pull request or branch."""


class ForgeUnavailable(ForgeError):
    """The forge cannot be reached, answered 5xx, or kept rate-limiting past the call's time budget."""
