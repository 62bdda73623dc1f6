"""How a stage ends when it does not succeed. Each message is one sentence a person can act on."""


class Rejected(Exception):
    """Bad input (photos, lora.toml, a duplicate): the folder goes to failed/ with error.txt."""


class StageFailed(Exception):
    """A fault in lorad, the machine or the trainer: the job can be retried (lorad retry JOB)."""


class Cancelled(Exception):
    """The job was cancelled (lorad cancel JOB) or the daemon is stopping."""
