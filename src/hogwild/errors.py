"""User-facing errors.

Everything a user can cause (bad arguments, missing models, corrupt files, oversized
prompts) raises a subclass of :class:`HogwildError` with a message that says what to do.
The CLI prints the message without a traceback.
"""


class HogwildError(Exception):
    """An error caused by input or environment, with a message meant for the user."""


class ModelNotFoundError(HogwildError):
    """A model name or path that cannot be resolved."""


class ModelLoadError(HogwildError):
    """A checkpoint that exists but cannot be read (corrupt, truncated, unsupported)."""


class UnsupportedArchitectureError(ModelLoadError):
    """A checkpoint whose architecture our own forward does not implement."""


class InvalidRequestError(HogwildError):
    """Bad run parameters: empty problem, N = 0, unknown layout, prompt too long, ..."""


class ContextLengthError(InvalidRequestError):
    """A prompt that does not fit in the model's context."""
