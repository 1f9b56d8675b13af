"""The one exception type users see: its message names the file or field at fault."""

import errno


class LayerTapError(Exception):
    """A problem the user can act on (bad input, missing file, invalid config).

    The CLI prints the message and exits non-zero, without a traceback.
    """


def is_disk_full(error: BaseException) -> bool:
    """No space left, or over the quota: a retry on the same disk would fail the same way."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
