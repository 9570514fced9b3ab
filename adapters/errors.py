"""Exceptions that tell the user what to fix, kept apart so every layer can raise them."""


class ConfigurationError(ValueError):
    """A model configuration is refused before anything is loaded or run."""


class MalformedItemError(ValueError):
    """A prompt item cannot be read at all; the other items of the batch are still answered."""


class ModelFailure(RuntimeError):
    """A model-side step (forward, generate, postprocess) failed: a fault of the model, never of the input."""
