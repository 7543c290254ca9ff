"""Domain errors shared by hostd and sandboxes.

Each error has a ``code`` that travels in protocol error replies; hostd maps
codes to HTTP statuses in one place (:mod:`hostd.errors`).
"""
from __future__ import annotations

__all__ = [
    "InsightsError", "ModuleLoadError", "BadParameter", "EndpointNotFound",
    "ModuleRaised", "ModuleTimeout", "ModuleCrashed", "ModuleNotRunning", "AlreadyRunning", "Rebuilding",
    "StoreUnavailable", "FileQuotaExceeded", "CacheMiss",
    "error_from_reply",
]


class InsightsError(Exception):
    """Base of every domain error."""

    code = "internal"
    #: the module's traceback, when the error is the module's (kept by hostd, never sent to callers)
    traceback: str | None = None

    def to_reply_fields(self) -> dict:
        """:returns: the ``error`` map of a protocol reply."""
        return {"code": self.code, "message": str(self)}


class ModuleLoadError(InsightsError):
    """A module folder cannot be loaded (bad name, bad signature, collision...)."""

    code = "load_error"


class BadParameter(InsightsError):
    """A request parameter is missing or cannot be converted.

    :param param: the parameter's name.
    :param message: what is wrong with it.
    """

    code = "bad_parameter"

    def __init__(self, param: str, message: str):
        super().__init__(f"parameter {param!r}: {message}")
        self.param = param

    def to_reply_fields(self) -> dict:
        return {**super().to_reply_fields(), "param": self.param}


class EndpointNotFound(InsightsError):
    """No view or query of that name."""

    code = "not_found"


class ModuleRaised(InsightsError):
    """The module's function raised; the traceback stays in the log and ``/modules``."""

    code = "module_error"


class ModuleTimeout(InsightsError):
    """The call did not finish before its deadline."""

    code = "timeout"


class ModuleCrashed(InsightsError):
    """The module's process died during the call."""

    code = "crashed"


class ModuleNotRunning(InsightsError):
    """The module exists but its sandbox is not running."""

    code = "not_running"


class AlreadyRunning(InsightsError):
    """A run of that cron task is still going (here or on another node)."""

    code = "conflict"


class Rebuilding(ModuleNotRunning):
    """The module's data is being rebuilt (``hostd rebuild``): its answers would be incomplete."""

    code = "rebuilding"


class StoreUnavailable(InsightsError):
    """The store could not be reached or refused the write.

    Its message (the store's own error, which may quote stored documents) is for
    the log; callers get a fixed one.
    """

    code = "store_unavailable"

    def to_reply_fields(self) -> dict:
        return {"code": self.code, "message": "the event store is unavailable; try again later"
                                              " (events of this request already logged count as duplicates)"}


class FileQuotaExceeded(InsightsError):
    """A write would take a module's files past its ``limits.fs_mb``; the file is left as it was.

    Raised in the module by the ``write`` (or ``close``) of a file from ``fs.open``; the
    module's other files, and the module itself, are unaffected.
    """

    code = "file_quota_exceeded"


class CacheMiss(InsightsError):
    """``f.from_cache(...)`` of a ``@memoize_query`` function found no cached result.

    Not a bug of the module: the result is simply not computed yet (or expired,
    or was cleared). A call that lets it propagate answers with this code.
    """

    code = "not_cached"


_BY_CODE = {cls.code: cls for cls in (ModuleLoadError, EndpointNotFound, ModuleRaised,
                                      ModuleTimeout, ModuleCrashed, ModuleNotRunning, AlreadyRunning,
                                      Rebuilding, StoreUnavailable, CacheMiss)}


def error_from_reply(error: dict) -> InsightsError:
    """Rebuild the domain error described by a protocol reply's ``error`` map."""
    if error.get("code") == "bad_parameter":
        exc = BadParameter(error.get("param", "?"), "")
        exc.args = (error.get("message", ""),)
        return exc
    exc = _BY_CODE.get(error.get("code"), InsightsError)(error.get("message", ""))
    exc.traceback = error.get("traceback")  # for hostd's records; never part of an HTTP answer
    return exc
