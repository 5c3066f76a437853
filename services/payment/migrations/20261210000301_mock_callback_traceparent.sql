-- The trace of the request that scheduled a mock callback (W3C traceparent), so the callback
-- the mock provider posts later continues it. NULL when traces were off.
ALTER TABLE mock_callbacks ADD COLUMN IF NOT EXISTS traceparent TEXT;
