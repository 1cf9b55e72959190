-- Cost tracking: the machine's guest (to price it), how long each run
-- lasted, and alerts that are not about one Fly event (runaway machines,
-- budget thresholds, digests), kept until Discord accepts them.

ALTER TABLE machines ADD COLUMN cpu_kind TEXT;
ALTER TABLE machines ADD COLUMN cpus INTEGER;
ALTER TABLE machines ADD COLUMN memory_mb INTEGER;
ALTER TABLE machines ADD COLUMN gpu_kind TEXT;
ALTER TABLE machines ADD COLUMN gpus INTEGER;

ALTER TABLE events ADD COLUMN ran_ms INTEGER;

CREATE TABLE IF NOT EXISTS runs (
  machine_id TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  app TEXT NOT NULL,
  stopped_at INTEGER,
  runaway_alerts INTEGER NOT NULL DEFAULT 0,
  last_alert_at INTEGER,
  resolved_at INTEGER,
  auto_stop_at INTEGER,
  PRIMARY KEY (machine_id, started_at)
);

CREATE INDEX IF NOT EXISTS runs_open ON runs (machine_id) WHERE stopped_at IS NULL;

CREATE INDEX IF NOT EXISTS runs_stopped ON runs (stopped_at);

CREATE TABLE IF NOT EXISTS notices (
  key TEXT PRIMARY KEY NOT NULL,
  kind TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  silent INTEGER NOT NULL DEFAULT 0,
  embed TEXT NOT NULL,
  notified_at INTEGER,
  claimed_until INTEGER
);

CREATE INDEX IF NOT EXISTS notices_undelivered
  ON notices (created_at)
  WHERE notified_at IS NULL;
