"""The exception and the warnings the data package gives its users.

Warnings go through Python's warnings module (callers and tests can filter or catch them),
but are shown as one plain line, "warning: ...": the file name, line number and source line
that Python prints by default say nothing to someone loading a data set.
"""

import sys
import warnings


class DataError(Exception):
    """A data set could not be loaded; str() is one line: which file, what, and what to do."""


class DataWarning(Warning):
    """Something the user should know about the data cache; the data still loaded."""


class CorruptCacheWarning(DataWarning, UserWarning):
    """A cached file failed verification and was set aside (it is fetched again)."""


class CacheWriteWarning(DataWarning, RuntimeWarning):
    """A verified file could not be written to the cache (the data loaded all the same)."""


def _show_plainly(show):
    def showwarning(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, DataWarning):
            return show(message, category, filename, lineno, file, line)
        stream = sys.stderr if file is None else file
        if stream is not None:
            try:
                stream.write(f"warning: {' '.join(str(message).split())}\n")
            except OSError:       # like warnings.showwarning: a closed stderr loses it
                pass
        return None

    showwarning.barenet_plain = True
    return showwarning


def install_plain_display() -> None:
    """Show DataWarnings as one line; every other warning as before (idempotent)."""
    if not getattr(warnings.showwarning, "barenet_plain", False):
        warnings.showwarning = _show_plainly(warnings.showwarning)


def warn(message: str, category: type[DataWarning]) -> None:
    warnings.warn(" ".join(message.split()), category, stacklevel=2)


# Installed once, on import. Not again on each warning: warnings.catch_warnings(record=True)
# (pytest.warns) records only while showwarning is Python's own.
install_plain_display()
