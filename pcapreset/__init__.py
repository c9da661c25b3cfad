"""pcapreset: explain TCP resets between nginx and its upstream backends.

    >>> import pcapreset
    >>> rep = pcapreset.analyze("backend.pcap")
    >>> rep.to_json()["summary"]["by_cause"]
"""

__version__ = "0.1.0"

from .api import analyze  # noqa: E402
from .errors import CaptureError, PcapResetError  # noqa: E402

__all__ = ["analyze", "CaptureError", "PcapResetError", "__version__"]
