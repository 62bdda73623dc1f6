"""How a stage (or the daemon's start) ends when it does not succeed. Each message is one
sentence a person can act on."""

from __future__ import annotations


class Rejected(Exception):
    """Bad input (photos, lora.toml, a duplicate): the folder goes to failed/ with error.txt."""


class StageFailed(Exception):
    """A fault in lorad, the machine or the trainer: the job can be retried (lorad retry JOB)."""


class Cancelled(Exception):
    """The job was cancelled (lorad cancel JOB) or the daemon is stopping."""


class RequestError(Exception):
    """A person's request (retry, cancel, resume, pick...) that cannot be done; the message says
    why and what would work."""


class CannotStart(Exception):
    """The daemon cannot use one of its folders (missing, not writable, not a folder)."""

    @classmethod
    def from_os_error(cls, error: OSError) -> CannotStart:
        reason = error.strerror or str(error)
        if error.filename is None:
            return cls(f"lorad cannot start: {reason}")
        return cls(f"cannot use {error.filename}: {reason}; create it (and its parent folders) "
                   "or fix their owner and permissions so that the user running lorad may write "
                   "there, or point inbox, outbox, state_dir and failed elsewhere in the "
                   "configuration")
