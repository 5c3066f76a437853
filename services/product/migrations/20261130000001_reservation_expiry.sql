-- A reservation expires unless its order commits it: an order service that dies, or whose
-- caller gave up, between reserving and saving the order leaves no stock held for good.
-- NULL: committed (or made before this migration), held until sold or released.
ALTER TABLE stock_reservations ADD COLUMN expires_at TIMESTAMPTZ;

CREATE INDEX stock_reservations_expiring ON stock_reservations (expires_at)
    WHERE state = 'reserved' AND expires_at IS NOT NULL;
