-- The transactional outbox: a service writes its events here in the same transaction as the
-- change they describe; the relay publishes them to Kafka and marks them published.
CREATE TABLE IF NOT EXISTS event_outbox (
    id           BIGSERIAL PRIMARY KEY,
    event_id     UUID NOT NULL UNIQUE,
    topic        TEXT NOT NULL,
    event_key    TEXT NOT NULL,
    payload      JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);

-- The relay only ever scans what is still unpublished.
CREATE INDEX IF NOT EXISTS event_outbox_unpublished ON event_outbox (id) WHERE published_at IS NULL;

-- Events a consumer has handled, so a redelivered event changes nothing.
CREATE TABLE IF NOT EXISTS handled_events (
    consumer_group TEXT NOT NULL,
    event_id       UUID NOT NULL,
    handled_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
