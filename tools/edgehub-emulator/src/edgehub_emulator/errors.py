"""One small error hierarchy for the emulator; the CLI and the HTTP layer translate it at the boundary."""


class EmulatorError(Exception):
    """Base class of every error the emulator raises on purpose."""


class ConfigError(EmulatorError):
    """A setting, the state folder or a CLI argument is invalid."""


class StateError(EmulatorError):
    """The state database is damaged (truncated, overwritten): refused with what to do, never used half-read."""


class ManifestError(EmulatorError):
    """The deployment manifest cannot be used (bad JSON, bad route syntax, missing sections)."""


class RouteSyntaxError(ManifestError):
    """A route string does not follow `FROM <source> [WHERE <condition>] INTO <sink>`."""


class AuthError(EmulatorError):
    """A SAS token is malformed, expired, for another resource or signed with the wrong key."""


class NotFoundError(EmulatorError):
    """A device, module or method target does not exist or is not connected."""


class ConflictError(EmulatorError):
    """The request would create something that already exists (IoT Hub's 409, e.g. ModuleAlreadyExistsOnDevice)."""


class PreconditionFailedError(EmulatorError):
    """An `If-Match` etag did not match the current one."""


class BadRequestError(EmulatorError):
    """A request body or payload is malformed (bad JSON, wrong shape, too large)."""


class GatewayTimeoutError(EmulatorError):
    """A module did not answer a direct method within the requested time."""


class UnsupportedMediaTypeError(BadRequestError):
    """A body declared as something other than what the endpoint reads (HTTP 415)."""
