"""User-facing errors.

Every problem a user can fix (bad input, a missing file, an inconsistent option) is raised as
:class:`EssegError` with a one-line message that says what was wrong, where, and what to do.
The CLI turns it into ``esseg: error: <message>`` and exit status 2, with no traceback.
``EssegError`` subclasses :class:`ValueError` so library callers can catch either.
"""

from __future__ import annotations


class EssegError(ValueError):
    """A user-fixable problem; ``str(err)`` is a single actionable line."""


class DatasetError(EssegError):
    """A dataset on disk is missing, laid out wrongly or holds invalid values."""


class ConfigError(EssegError):
    """A configuration key or value is invalid."""


class CheckpointError(EssegError):
    """A checkpoint is unreadable or does not match the requested model."""


class NonFiniteError(EssegError):
    """A model's embeddings or outputs hold NaN or infinite values (e.g. a diverged checkpoint)."""
