"""Errors that map to the exit codes a scheduler can act on."""

EXIT_OK = 0
EXIT_STAGE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DRIFT = 3  # --fail-on-drift: every stage ran, but a drift check breached its threshold
EXIT_BUSY = 4  # another run holds the lakehouse: nothing was written, retry later
EXIT_TERMINATED = 143  # stopped by SIGTERM (128 + 15), as a shell reports it


class CustsegError(Exception):
    """Base class: an error whose message is meant for the user, in one line."""

    exit_code = EXIT_STAGE_FAILED


class ConfigError(CustsegError):
    """A configuration file or override has an unknown key or a bad value."""

    exit_code = EXIT_BAD_INPUT


class InputError(CustsegError):
    """An input file cannot be read as invoice lines (names the file, column or row)."""

    exit_code = EXIT_BAD_INPUT


class StageError(CustsegError):
    """A stage ran but its result failed a check (for example reconciliation)."""

    exit_code = EXIT_STAGE_FAILED


class LakehouseBusy(CustsegError):
    """Another run holds the lakehouse lock; this one wrote nothing."""

    exit_code = EXIT_BUSY


class Terminated(CustsegError):
    """SIGTERM arrived (a scheduler's timeout or kill): the stage stopped between commits."""

    exit_code = EXIT_TERMINATED
