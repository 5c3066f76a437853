-- The trace an event belongs to (W3C traceparent of the span that wrote it), kept with the row so
-- that an event published late, after a broker outage, still joins its trace. NULL when traces
-- were off.
ALTER TABLE event_outbox ADD COLUMN IF NOT EXISTS traceparent TEXT;
