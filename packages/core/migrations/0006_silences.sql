-- Silences: an app glob or one machine muted until ends_at. Rows come from
-- the Bun CLI (source 'cli', numbered ids) or are copied from SILENCES
-- (source 'config', ids 'c-…'). A silence is never deleted, so its id and
-- the events folded into 'silence:<id>' keep meaning the same thing;
-- removed_at marks one taken away, ended_at one whose end was noted.

CREATE TABLE IF NOT EXISTS silences (
  id TEXT PRIMARY KEY NOT NULL,
  source TEXT NOT NULL,
  app TEXT,
  machine_id TEXT,
  ends_at INTEGER NOT NULL,
  reason TEXT,
  created_at INTEGER NOT NULL,
  removed_at INTEGER,
  ended_at INTEGER
);

-- How many alerts each silence has settled, by event type or notice kind.

CREATE TABLE IF NOT EXISTS silence_counts (
  silence_id TEXT NOT NULL,
  type TEXT NOT NULL,
  n INTEGER NOT NULL,
  PRIMARY KEY (silence_id, type)
);
