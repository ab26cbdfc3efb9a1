"""The error types a user sees. Each message says what is wrong and how to fix it."""


class TidewrightError(Exception):
    """Base class: an error caused by input or configuration, reported in one line."""


class ConfigError(TidewrightError, ValueError):
    """A pipeline config is invalid; the message names the field and the fix."""


class InputError(TidewrightError, ValueError):
    """Source data cannot be used (missing, empty, wrong columns); the message says how to fix it."""


class TeacherError(TidewrightError, RuntimeError):
    """A teacher run produced nothing usable; the message gives the reasons and where the ledger is."""
