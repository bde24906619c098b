"""The results store: `Store` (the SQLite file), its schema, and ingestion of run dirs."""

from rankscope.store.db import Store, StoreError, store_problem
from rankscope.store.ingest import ingest_run
from rankscope.store.schema import RUN_FIELDS, SCHEMA

__all__ = ["RUN_FIELDS", "SCHEMA", "Store", "StoreError", "ingest_run", "store_problem"]
