"""PyAV, imported only where videos are decoded or encoded.

Training and evaluation read HDF5 files and never need PyAV, so nothing imports it at module
level: the code that decodes or encodes calls `require_av()`, which names the package and
the command to install it when it is missing.
"""
from errors import UserError

INSTALL_COMMAND = "pip install av"


class MissingPyAV(UserError, ImportError):
    """PyAV is needed here and not installed; the message is one line for the user."""


def require_av():
    """The `av` module; raises MissingPyAV when it is not installed."""
    try:
        import av
    except ModuleNotFoundError as e:
        if e.name != "av":
            raise
        raise MissingPyAV("decoding and encoding videos needs PyAV, which is not installed "
                          f"(install it with `{INSTALL_COMMAND}`)") from None
    return av
