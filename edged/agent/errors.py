"""Errors of the edge agent (the link to the origin controller).

    EdgedError (edged/errors.py)
    └── AgentError
        ├── EnrollmentError        permanent: bad, reused or expired token, wrong controller, no token;
        │                          Agent.start() raises it and edged exits 1 with its message
        └── ControllerUnavailable  transient: the controller cannot be reached; retried in the background
            └── ControllerSilent   the stream is open but the controller sent nothing for too long (hung)
"""

from __future__ import annotations

from edged.errors import EdgedError


class AgentError(EdgedError):
    """Root of the agent's errors."""


class EnrollmentError(AgentError):
    """The controller refused to enroll this node, or it cannot be enrolled as configured."""


class ControllerUnavailable(AgentError):
    """The controller could not be reached (retried with backoff)."""


class ControllerSilent(ControllerUnavailable):
    """The stream to the controller is open but nothing came down it within the silence limit."""
