"""User-facing errors.

Every problem a user can cause (bad params, corrupt files, empty splits) raises
an :class:`AnomalyError`; the CLI prints its message as one line and exits
non-zero. Anything else is a bug and keeps its traceback.
"""


class AnomalyError(Exception):
    """An error caused by input the user controls; the message says what and where."""


class ParamsError(AnomalyError):
    """params.yaml is missing a key, has an unknown key or a value of the wrong type."""


class DataError(AnomalyError):
    """A data file is missing, corrupt or inconsistent with its neighbours."""


class TrainingError(AnomalyError):
    """Training could not produce a usable model (NaN loss, no data)."""


class DownloadError(AnomalyError):
    """A dataset could not be fetched, verified or extracted."""
