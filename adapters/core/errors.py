"""Exceptions that tell the user what to fix, kept apart so every layer can raise them."""


class ConfigurationError(ValueError):
    """A model configuration is refused before anything is loaded or run."""


class MalformedItemError(ValueError):
    """A prompt item cannot be read at all; the other items of the batch are still answered."""


class ModelFailure(RuntimeError):
    """The model failed on input it accepted (a forward pass raised, out of memory): not the input's fault.

    `predict` raises it so the platform marks the execution failed (it can be retried) and dtlpy skips the batch's
    annotation upload, leaving the items' earlier answers untouched.
    """


class InputError(ValueError):
    """A question cannot be answered as given; the message is this package's own and never quotes user text."""
