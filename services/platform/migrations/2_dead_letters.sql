-- Events a consumer gave up on: its handler failed on them EVENT_MAX_ATTEMPTS times. They wait
-- here, with the last error, until someone re-drives them (`<service> redrive-events`).
CREATE TABLE IF NOT EXISTS dead_letters (
    consumer_group TEXT NOT NULL,
    event_id       UUID NOT NULL,
    event_type     TEXT NOT NULL,
    event_key      TEXT NOT NULL,
    payload        JSONB NOT NULL,
    error          TEXT NOT NULL,
    attempts       INT NOT NULL,
    parked_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);

-- Pruning handled ids by age.
CREATE INDEX IF NOT EXISTS handled_events_handled_at ON handled_events (handled_at);
