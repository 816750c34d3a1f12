"""One error hierarchy for the front-end. Second-factor errors carry the message the user sees."""

from __future__ import annotations


class FrontendError(Exception):
    """Base of every error the front-end raises on purpose."""


class SettingsError(FrontendError):
    """One or more environment variables hold values the front-end cannot start with."""


class UserStoreError(FrontendError):
    """A user cannot be added, changed or found as asked (the message says why)."""


class UnknownObjectError(UserStoreError):
    """The object to enrol is not a class the classifier's model can output."""


class SecondFactorError(FrontendError):
    """The second factor cannot go on; `str(error)` is a message for the user, free of secrets."""


class DeviceOfflineError(SecondFactorError):
    """IoT Hub answered 404: the device or its authrequest module is not connected."""


class DeviceTimeoutError(SecondFactorError):
    """IoT Hub answered 504: the module did not answer the method in time."""


class DeviceRefusedError(SecondFactorError):
    """The module answered, but not with 200 (a bad field, or its queue cannot be reached)."""


class HubUnavailableError(SecondFactorError):
    """IoT Hub cannot be reached or refused the service credentials."""


class StorageUnavailableError(SecondFactorError):
    """The result store (Azure Storage) cannot be reached or answered with an error."""


class MalformedResultError(SecondFactorError):
    """A result blob is not the JSON document the classifier writes, or is for another request."""
