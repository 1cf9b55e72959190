-- Alerts that are settled without being posted as themselves: one Discord
-- rejected even in a minimal form, or ones summed up in a single summary
-- message after MAX_ALERT_AGE. They get notified_at, so they never block
-- the queue again, and delivery_error says what became of them.

ALTER TABLE events ADD COLUMN delivery_error TEXT;

ALTER TABLE notices ADD COLUMN delivery_error TEXT;
