"""The results store's tables, and the one migration of an older store.

`runs` holds a run's identity as typed columns (train task, method, rank, alpha, lr, seed,
variant) beside its state and costs; `fits` holds what is fitted across runs, keyed by what
it was fitted over, so no row pretends to be a run's.
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY,
  model TEXT NOT NULL,
  train_task TEXT,            -- NULL for the base model
  method TEXT NOT NULL,       -- base | full | lora
  rank INTEGER,               -- LoRA rank, NULL otherwise
  alpha REAL,
  lr REAL,
  seed INTEGER,
  variant TEXT NOT NULL DEFAULT '',   -- e.g. rslora, dora, pissa
  replay REAL NOT NULL DEFAULT 0,     -- train.replay_fraction of the run (0 = none)
  config_hash TEXT NOT NULL,
  status TEXT NOT NULL,       -- running | interrupted | failed | done | stale | stopped
  stage TEXT,
  error TEXT,
  log_path TEXT,
  trainable_params INTEGER,
  total_params INTEGER,
  train_seconds REAL,
  tokens_per_second REAL,
  peak_memory_mb REAL,
  final_train_loss REAL,
  run_dir TEXT,
  updated_at REAL,
  budget_fraction REAL        -- a run stopped by successive halving: the budget it trained
);
CREATE TABLE IF NOT EXISTS train_log (
  run_id TEXT NOT NULL, step INTEGER NOT NULL, loss REAL, lr REAL, epoch REAL,
  PRIMARY KEY (run_id, step)
);
CREATE TABLE IF NOT EXISTS metrics (
  run_id TEXT NOT NULL, task TEXT NOT NULL,
  split TEXT NOT NULL DEFAULT 'test',   -- test | val (the validation items lr is chosen on)
  metric TEXT NOT NULL, value REAL, stderr REAL, n INTEGER,
  PRIMARY KEY (run_id, task, split, metric)
);
CREATE TABLE IF NOT EXISTS predictions (
  run_id TEXT NOT NULL, task TEXT NOT NULL, split TEXT NOT NULL DEFAULT 'test',
  item_id TEXT NOT NULL, pred TEXT, gold TEXT, correct INTEGER, detail TEXT,
  PRIMARY KEY (run_id, task, split, item_id)
);
CREATE TABLE IF NOT EXISTS ingested (  -- which run-dir file each run's rows came from
  run_id TEXT NOT NULL, unit TEXT NOT NULL, sig TEXT NOT NULL,
  PRIMARY KEY (run_id, unit)
);
CREATE TABLE IF NOT EXISTS analysis (
  run_id TEXT NOT NULL, kind TEXT NOT NULL, module TEXT NOT NULL, layer INTEGER NOT NULL,
  head INTEGER NOT NULL DEFAULT -1, metric TEXT NOT NULL, value REAL,
  PRIMARY KEY (run_id, kind, module, layer, head, metric)
);
CREATE TABLE IF NOT EXISTS fits (  -- across runs: mean ||dW||_F vs rank per train task
  train_task TEXT NOT NULL, method TEXT NOT NULL, variant TEXT NOT NULL DEFAULT '',
  module TEXT NOT NULL,       -- module type ('q_proj', ...) or 'all'
  metric TEXT NOT NULL,       -- log_a, log_b, log_r2, pow_c, pow_p, pow_r2
  value REAL,
  PRIMARY KEY (train_task, method, variant, module, metric)
);
"""

RUN_FIELDS = (
    "run_id",
    "model",
    "train_task",
    "method",
    "rank",
    "alpha",
    "lr",
    "seed",
    "variant",
    "replay",
    "config_hash",
    "status",
    "stage",
    "error",
    "log_path",
    "trainable_params",
    "total_params",
    "train_seconds",
    "tokens_per_second",
    "peak_memory_mb",
    "final_train_loss",
    "run_dir",
    "updated_at",
    "budget_fraction",
)


VERSION = 5
"""PRAGMA user_version: 2 = fits in their own table (kept out of `meta`'s rows); 3 = metrics
and predictions keyed by split (test | val); 4 = runs.budget_fraction (successive halving);
5 = runs.replay (train.replay_fraction)."""

_MIGRATE_FITS = """
INSERT OR REPLACE INTO fits
SELECT run_id, 'lora',
       COALESCE((SELECT variant FROM runs WHERE method = 'lora' LIMIT 1), ''),
       module, metric, value
FROM analysis WHERE kind = 'spectral_fit'
"""


_SPLIT_TABLES = ("metrics", "predictions")


def migrate(conn: sqlite3.Connection) -> None:
    """Bring an older store up to date. Call in a transaction.

    Before version 2, fits were `analysis` rows of kind spectral_fit whose run_id column held
    the train task. Before version 3, metrics and predictions had no split: the two tables are
    rebuilt empty and their run-dir files marked unread, so the next ingest (every `rankscope
    run`, or `rankscope reindex`) loads them again from the run directories. Before version 4,
    runs had no budget_fraction column (NULL: every run had its whole budget); before version
    5 no replay column (0: no run mixed general items in before replay existed).
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version >= VERSION:
        return
    if version < 2:
        conn.execute(_MIGRATE_FITS)
        conn.execute("DELETE FROM analysis WHERE kind = 'spectral_fit'")
    cols = {r[1] for r in conn.execute("PRAGMA table_info(metrics)")}
    if "split" not in cols:
        for table in _SPLIT_TABLES:
            conn.execute(f"DROP TABLE {table}")
        for stmt in SCHEMA.split(";"):
            if any(f"EXISTS {t} (" in stmt for t in _SPLIT_TABLES):
                conn.execute(stmt)
        conn.execute("DELETE FROM ingested WHERE unit LIKE 'eval/%'")
    if "budget_fraction" not in {r[1] for r in conn.execute("PRAGMA table_info(runs)")}:
        conn.execute("ALTER TABLE runs ADD COLUMN budget_fraction REAL")
    if "replay" not in {r[1] for r in conn.execute("PRAGMA table_info(runs)")}:
        conn.execute("ALTER TABLE runs ADD COLUMN replay REAL NOT NULL DEFAULT 0")
    conn.execute(f"PRAGMA user_version = {VERSION}")
