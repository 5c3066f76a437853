-- A reservation keeps what each line cost when it was taken, so a retried reservation answers
-- the same prices (lines from before this migration have none; their product's current ones
-- are answered).
ALTER TABLE stock_reservation_lines
    ADD COLUMN name        TEXT,
    ADD COLUMN price_cents BIGINT,
    ADD COLUMN image       TEXT;
