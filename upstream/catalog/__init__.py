"""The catalog as code: features, currencies, products, plans and add-ons loaded from YAML."""

from pathlib import Path

from upstream.catalog.loader import load_catalog, parse_catalog
from upstream.catalog.model import (
    Addon,
    AddonBehavior,
    Aggregation,
    Catalog,
    CatalogError,
    CreditCadence,
    CreditConfig,
    EntitlementDef,
    EventMeter,
    FeatureDef,
    FilterValue,
    Plan,
    Product,
    ResetAnchor,
)

# The demo catalog ships inside the package (a plain file next to this module in every install
# we build: wheel, editable, image), so the default works from any working directory.
DEMO_CATALOG = Path(__file__).resolve().parent / "demo.yaml"

__all__ = [
    "DEMO_CATALOG",
    "Addon",
    "AddonBehavior",
    "Aggregation",
    "Catalog",
    "CatalogError",
    "CreditCadence",
    "CreditConfig",
    "EntitlementDef",
    "EventMeter",
    "FeatureDef",
    "FilterValue",
    "Plan",
    "Product",
    "ResetAnchor",
    "load_catalog",
    "parse_catalog",
]
