"""asya-gateway (skeleton: the component is built by its own issue)."""

from .__about__ import __version__

__all__ = ["__version__"]
