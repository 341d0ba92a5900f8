"""The error of a data file that cannot be used as it is."""


class DataFileError(ValueError):
    """A data file that is unreadable, too large or holds values seglab cannot take as they are;
    the message is one sentence that names the file (and the option that would change it)."""
