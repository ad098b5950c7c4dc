"""srjax: label-free segmentation of synchrotron X-ray CT volumes in JAX."""

from importlib import metadata

try:
    __version__ = metadata.version("srjax")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
