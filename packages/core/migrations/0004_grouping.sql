-- Routing, several orgs, and alerts that are settled without a message of
-- their own. `org` is the Fly organization an app belongs to (NULL in rows
-- written before several orgs were supported). `folded_into` says what an
-- event went into instead of its own alert: a restart storm, a silence, or
-- an app's rate-limit summary; such an event gets notified_at when folded,
-- so it never enters the delivery queue. Notices carry the app and org they
-- are about, so they take the same Discord route as that app's events.

ALTER TABLE events ADD COLUMN org TEXT;

ALTER TABLE events ADD COLUMN folded_into TEXT;

ALTER TABLE machines ADD COLUMN org TEXT;

ALTER TABLE notices ADD COLUMN app TEXT;

ALTER TABLE notices ADD COLUMN org TEXT;

CREATE INDEX IF NOT EXISTS events_app_time ON events (app, timestamp);
