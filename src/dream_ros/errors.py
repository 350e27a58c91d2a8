"""The documented error types. Anything else escaping the core is a bug."""


class DreamError(ValueError):
    """Base class: bad configuration or bad input, with a message that says what to fix."""


class ConfigError(DreamError):
    """A robot config, model file, URDF or parameter is missing, corrupt or inconsistent."""


class InputError(DreamError):
    """Bad data handed to a function: wrong shape, NaN, unknown joint, non-positive focal length..."""
