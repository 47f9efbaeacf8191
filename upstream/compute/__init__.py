"""Pure computations over the catalog and customer facts."""

from upstream.compute.effective import compute_snapshot

__all__ = ["compute_snapshot"]
