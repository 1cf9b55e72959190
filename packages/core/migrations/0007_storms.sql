-- Restart storms and per-app alert limits.
--
-- A storm is a machine that keeps starting and exiting. Its key is
-- storm:<machine id>:<Fly timestamp of its first event>: the key of its
-- first notice, and what its events are folded into. `reported` is how many
-- start/exit events the notices so far have counted, so an update says what
-- is new; `announced` is 1 once the first notice is queued. One storm at
-- most is open per machine (ended_at NULL), even with two passes at once.

CREATE TABLE IF NOT EXISTS storms (
  key TEXT PRIMARY KEY NOT NULL,
  machine_id TEXT NOT NULL,
  app TEXT NOT NULL,
  org TEXT,
  started_at INTEGER NOT NULL,
  detected_at INTEGER NOT NULL,
  announced INTEGER NOT NULL DEFAULT 0,
  reported INTEGER NOT NULL DEFAULT 0,
  updates INTEGER NOT NULL DEFAULT 0,
  last_notice_at INTEGER,
  last_event_at INTEGER,
  ended_at INTEGER
);

CREATE UNIQUE INDEX IF NOT EXISTS storms_open
  ON storms (machine_id)
  WHERE ended_at IS NULL;

CREATE INDEX IF NOT EXISTS storms_ended ON storms (ended_at);

-- Fixed windows of an app in which events past APP_ALERT_LIMIT were folded
-- into limit:<app>:<window start>; noticed_at is set once the summary of
-- the ended window is queued, so it is queued once.

CREATE TABLE IF NOT EXISTS throttled_windows (
  app TEXT NOT NULL,
  window_start INTEGER NOT NULL,
  window_end INTEGER NOT NULL,
  org TEXT,
  created_at INTEGER NOT NULL,
  noticed_at INTEGER,
  PRIMARY KEY (app, window_start)
);

CREATE INDEX IF NOT EXISTS throttled_windows_due
  ON throttled_windows (window_end)
  WHERE noticed_at IS NULL;
