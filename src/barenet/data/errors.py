"""The one exception the data package raises to its users."""


class DataError(Exception):
    """A data set could not be loaded; str() is one line: which file, what, and what to do."""
