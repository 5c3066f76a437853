-- Refunds: a payment that succeeded for an order that can no longer take it (cancelled, or
-- paid already by another payment) is refunded through the provider. 5 refunding: asked of
-- the provider; 6 refunded: the provider confirmed. Both were paid.
ALTER TABLE payments
    DROP CONSTRAINT payments_status_check,
    ADD CONSTRAINT payments_status_check CHECK (status IN (1, 2, 3, 4, 5, 6)),
    DROP CONSTRAINT payments_check,
    ADD CONSTRAINT payments_paid_when_charged CHECK ((status IN (2, 5, 6)) = (paid_at IS NOT NULL)),
    ADD COLUMN refund_reason TEXT NOT NULL DEFAULT '',
    ADD COLUMN refunded_at   TIMESTAMPTZ,
    ADD CONSTRAINT payments_refunded_when_confirmed CHECK ((status = 6) = (refunded_at IS NOT NULL));

-- At most one charge stands per order, whatever the code does.
CREATE UNIQUE INDEX payments_one_success_per_order ON payments (order_id) WHERE status = 2;

-- Orders this service has heard were cancelled (order.cancelled): no payment of theirs may
-- stand, so one that succeeds later is refunded at once.
CREATE TABLE cancelled_orders (
    order_id     BIGINT PRIMARY KEY,
    cancelled_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
