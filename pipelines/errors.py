"""The one error type of the data pipelines."""


class DataError(ValueError):
    """Bad user input to a pipeline: one sentence naming the flag, file or field at fault."""
