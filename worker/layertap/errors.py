"""The one exception type users see: its message names the file or field at fault."""


class LayerTapError(Exception):
    """A problem the user can act on (bad input, missing file, invalid config).

    The CLI prints the message and exits non-zero, without a traceback.
    """
