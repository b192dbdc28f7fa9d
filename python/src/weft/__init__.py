"""weft: a Python client for the weft mesh's REST API.

``Client()`` talks to the daemon of ``$WEFT_HOME`` (else ``~/.weft``): its
address from ``HOME/api``, its token from ``HOME/api-token``; or pass
``addr=`` and ``token=``. See ``Client`` for the calls and
``weft.errors`` for what they raise.
"""

from .client import ActiveRun, Client, LogLine, run_row
from .errors import (
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    JobFailed,
    NoDaemon,
    NotFound,
    ServerError,
    SpecError,
    Unauthorized,
    Unavailable,
    WaitTimeout,
    WeftError,
)

__version__ = "0.1.0"

__all__ = [
    "ActiveRun",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "JobFailed",
    "LogLine",
    "NoDaemon",
    "NotFound",
    "ServerError",
    "SpecError",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
    "WeftError",
    "run_row",
]
