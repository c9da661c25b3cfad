"""The library's own error types. Everything the CLI turns into a one-line message."""


class PcapResetError(Exception):
    """Base class of every error pcapreset raises on purpose."""


class CaptureError(PcapResetError):
    """The input is not a capture we can read (garbage, empty, unknown link type...)."""


class CaptureSourceError(PcapResetError):
    """A live capture could not be started (permissions, interface, filter)."""
