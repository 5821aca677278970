"""The error every tool turns into one line on stderr (diffhdr.cli.run). Its own module, free of torch,
so that a tool can import it before parsing its arguments and `--help` answers at once."""


class InputError(ValueError):
    """Bad input data; the message names the file and what is wrong."""
