"""Domain errors. Only the CLI turns them into exit codes (see ``edgeft.cli``).

Exit codes: 0 success, 1 error (bad input, missing dependency, failed stage), 2 usage error (click),
3 an engine failed a verification gate, 4 no gate failed but one could not be measured here (incomplete).
"""
from __future__ import annotations

from edgeft_runtime.errors import BundleError, EdgeftError  # noqa: F401 - one base class for both distributions


class ConfigError(EdgeftError):
    """A run, target or calibration config is invalid."""


class DataError(EdgeftError):
    """The dataset cannot be used (missing file, wrong columns, one class, empty, ...)."""


class TargetError(EdgeftError):
    """A target is unknown or asks for something its backend cannot do."""


class BackendUnavailable(EdgeftError):
    """A backend's runtime is not installed here."""


class RunDirError(EdgeftError):
    """The run directory lacks what a stage needs (e.g. a stage run alone before its parent)."""


class ParityError(EdgeftError):
    """An exported model does not match the model it came from."""


class GateFailed(EdgeftError):
    """At least one engine failed a verification gate. Distinct exit code so CI can tell."""

    exit_code = 3


class GatesNotMeasured(EdgeftError):
    """No gate failed, but at least one could not be measured on this host (incomplete verdict)."""

    exit_code = 4
