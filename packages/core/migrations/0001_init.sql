-- One schema for both runtimes: wrangler applies this folder to D1, the Bun
-- runner applies it to SQLite. Plain SQLite that D1 accepts; no transactions.

CREATE TABLE IF NOT EXISTS machines (
  id TEXT PRIMARY KEY NOT NULL,
  app TEXT NOT NULL,
  name TEXT NOT NULL,
  region TEXT NOT NULL,
  size TEXT NOT NULL,
  state TEXT NOT NULL,
  last_event_key TEXT,
  last_event_at INTEGER,
  updated_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
  key TEXT PRIMARY KEY NOT NULL,
  machine_id TEXT NOT NULL,
  app TEXT NOT NULL,
  type TEXT NOT NULL,
  status TEXT NOT NULL,
  source TEXT NOT NULL,
  timestamp INTEGER NOT NULL,
  exit_code INTEGER,
  oom_killed INTEGER,
  requested_stop INTEGER,
  restart_count INTEGER,
  exit_error TEXT,
  first_seen_at INTEGER NOT NULL,
  baseline INTEGER NOT NULL DEFAULT 0,
  notified_at INTEGER,
  claimed_until INTEGER
);

CREATE INDEX IF NOT EXISTS events_undelivered
  ON events (timestamp)
  WHERE notified_at IS NULL;

CREATE INDEX IF NOT EXISTS events_machine ON events (machine_id, timestamp);

CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY NOT NULL,
  value TEXT NOT NULL,
  updated_at INTEGER NOT NULL
);
