"""The user-facing error type, in a module of its own so that every layer (registries, config, runs) can raise it."""


class ConfigError(ValueError):
    """A user-facing configuration error: the CLI prints it on one line and exits with code 2."""


__all__ = ["ConfigError"]
