"""Errors raised by the weft client.

Every error the daemon answers is JSON ``{"error": CODE, "detail": TEXT}``
with an HTTP status; the client raises it as a :class:`WeftError` subclass
chosen by the code (else by the status), carrying ``code``, ``detail`` and
``status``. Problems found before or without an answer (no daemon, the
connection refused, a wait that ran out of time) are ``WeftError``\\ s too,
with ``status`` ``None``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Type

__all__ = [
    "WeftError",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Conflict",
    "Unavailable",
    "ServerError",
    "ConnectionFailed",
    "NoDaemon",
    "WaitTimeout",
    "JobFailed",
    "SpecError",
    "error_for",
]


class WeftError(Exception):
    """An error from the weft daemon or the client.

    Attributes:
        code: the API's machine-readable code (``not_found``, ``bad_spec``, ...).
        detail: the API's sentence saying what went wrong (and what to do).
        status: the HTTP status, or ``None`` when no answer came.
    """

    def __init__(self, code: str, detail: str, status: Optional[int] = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status

    def __str__(self) -> str:
        where = f"HTTP {self.status}, " if self.status is not None else ""
        return f"{self.detail} ({where}{self.code})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r}, status={self.status!r})"


class BadRequest(WeftError):
    """The request was refused as invalid (400): ``bad_request``, ``bad_spec``,
    ``invalid_parameter_value``, ``bad_input``, ``ambiguous``, ``is_tree``, ..."""


class Unauthorized(WeftError):
    """The token is missing or wrong (401)."""


class Forbidden(WeftError):
    """The daemon refused the request (403): ``bad_host``, ``outside_roots``, a
    foreign ``Origin``."""


class NotFound(WeftError):
    """No such artifact, tag, job, run, model or endpoint (404, ``not_found``)."""


class Conflict(WeftError):
    """The thing exists already or is in a state that refuses the change (409)."""


class Unavailable(WeftError):
    """The node cannot answer this now (503): no scheduler, stopping, ..."""


class ServerError(WeftError):
    """The daemon failed (5xx other than 503)."""


class ConnectionFailed(WeftError):
    """The daemon could not be reached (``status`` is ``None``)."""


class NoDaemon(WeftError):
    """No daemon has written its address into the home (``WEFT_HOME``)."""


class WaitTimeout(WeftError, TimeoutError):
    """A wait for a job or a pipeline run ran out of time (client side)."""


class JobFailed(WeftError):
    """A job or pipeline run ended ``failed`` or ``cancelled`` (raised by
    ``wait(..., check=True)``). ``status_record`` holds its last status."""

    def __init__(self, code: str, detail: str, record: Dict[str, Any]) -> None:
        super().__init__(code, detail, None)
        self.status_record = record


class SpecError(WeftError):
    """A job or pipeline spec could not be read on the client side."""


_BY_CODE: Dict[str, Type[WeftError]] = {
    "not_found": NotFound,
    "bad_request": BadRequest,
    "bad_spec": BadRequest,
    "bad_input": BadRequest,
    "bad_image": BadRequest,
    "invalid_parameter_value": BadRequest,
    "ambiguous": BadRequest,
    "is_tree": BadRequest,
    "unauthorized": Unauthorized,
    "bad_host": Forbidden,
    "cross_origin": Forbidden,
    "outside_roots": Forbidden,
    "exists": Conflict,
    "unavailable": Unavailable,
    "stopping": Unavailable,
}

_BY_STATUS: Dict[int, Type[WeftError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    503: Unavailable,
}


def error_for(status: int, code: str, detail: str) -> WeftError:
    """The exception for an API error answer: by code, else by status."""
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else WeftError
    return cls(code, detail, status)
