"""Compatibility: moved to :mod:`lightning_fl.federation.host`."""

from lightning_fl.federation.host import FederatedAveraging

__all__ = ["FederatedAveraging"]
