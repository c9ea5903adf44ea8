"""How a command ends on a user's mistake: one line on stderr and exit status 2, no traceback.

A user error (``adapt.errors.AdaptError``: a missing file, a bad option, no network for a Hub
model) is printed as one message -- what is wrong, where, how to fix it -- and anything else is
a bug and keeps its traceback. A full disk met by a write that has no setting of its own to
name (an adapter, a mask, a summary) is a user error too (``adapt.storage.disk_full``). This is
the one printer of every command, of the door (``adapt.cli``) and of the run folder's checks
(``adapt.training.run_dir``), so it sits in the bottom layer beside ``errors`` and ``storage``.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

from adapt.errors import AdaptError
from adapt.storage import disk_full, is_disk_full

USER_ERROR_STATUS = 2


def format_error(err: AdaptError) -> str:
    """``sam2-adapt: <kind>: <message>``, the one line a command prints for a user error."""
    return f"sam2-adapt: {type(err).__name__}: {err}"


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Print a user error from the block on stderr and exit with status 2.

    A full disk met by a write that has no setting of its own to name (an adapter, a mask, a
    summary) is a user error too: the message names the file and the folder's free space.
    """
    try:
        yield
    except AdaptError as err:
        print(f"\n{format_error(err)}", file=sys.stderr)
        sys.exit(USER_ERROR_STATUS)
    except Exception as err:
        if not is_disk_full(err):
            raise
        print(f"\n{format_error(disk_full(err))}", file=sys.stderr)
        sys.exit(USER_ERROR_STATUS)
