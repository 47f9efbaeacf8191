"""The catalog as code: features, currencies, products, plans and add-ons loaded from YAML."""

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

__all__ = [
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
