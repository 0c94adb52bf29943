"""The store: SQLAlchemy models, the migrated database, and queries."""

from labeling_pipeline.store.engine import Store, StoreError
from labeling_pipeline.store.repository import MaskRecord, NotFoundError

__all__ = ["MaskRecord", "NotFoundError", "Store", "StoreError"]
