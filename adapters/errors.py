"""Exceptions that tell the user what to fix, kept apart so every layer can raise them."""


class ConfigurationError(ValueError):
    """A model configuration is refused before anything is loaded or run."""


class MalformedItemError(ValueError):
    """A prompt item cannot be read at all; the other items of the batch are still answered."""


class InputError(ValueError):
    """A question cannot be answered as given; the message is this package's own and never quotes user text."""
