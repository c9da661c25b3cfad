"""pcapreset: explain TCP resets between nginx and its upstream backends.

>>> import pcapreset
>>> rep = pcapreset.analyze("backend.pcap")
>>> rep.to_json()["summary"]["by_cause"]
>>> a = pcapreset.load("backend.pcap")        # pandas DataFrames
>>> a.resets["cause"].value_counts()
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING  # noqa: E402

from ._build import prefer_fresh_source  # noqa: E402

prefer_fresh_source()  # before anything imports pcapreset.flows

from .errors import CaptureError, PcapResetError  # noqa: E402

if TYPE_CHECKING:
    from .api import analyze
    from .cluster.run import fleet
    from .notebook.frames import Analysis, load


def __getattr__(name: str) -> object:
    # pcapreset.load / pcapreset.Analysis import pandas: only when first used,
    # so the CLI does not pay for it; pcapreset.analyze imports numpy, which
    # the console script (__main__.py) sets up before it is first imported
    if name == "analyze":
        from .api import analyze

        return analyze
    if name == "fleet":  # Dask is imported only when a fleet runs
        from .cluster.run import fleet

        return fleet
    if name in ("load", "Analysis"):
        from .notebook import frames

        return getattr(frames, name)
    raise AttributeError(f"module 'pcapreset' has no attribute {name!r}")


__all__ = ["analyze", "fleet", "load", "Analysis", "CaptureError", "PcapResetError", "__version__"]
