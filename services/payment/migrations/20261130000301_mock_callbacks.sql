-- The mock provider's callbacks still to post, written with the payment they answer, so a
-- restart loses none. A delivery in progress pushes due_at forward (its lease); a replica that
-- dies mid-delivery leaves the row to be claimed again once the lease runs out.
CREATE TABLE mock_callbacks (
    payment_no   TEXT NOT NULL REFERENCES payments (payment_no),
    -- A payment's outcome, or the confirmation of its refund.
    kind         TEXT NOT NULL DEFAULT 'payment' CHECK (kind IN ('payment', 'refund')),
    order_id     BIGINT NOT NULL,
    amount_cents BIGINT NOT NULL,
    -- The payment status it reports: 2 success, 3 failed, 6 refunded.
    outcome      SMALLINT NOT NULL CHECK (outcome IN (2, 3, 6)),
    trade_no     TEXT NOT NULL,
    -- voided: the payment was called off (its order cancelled) before the buyer paid.
    state        TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'refused', 'given_up', 'voided')),
    due_at       TIMESTAMPTZ NOT NULL,
    attempts     INT NOT NULL DEFAULT 0,
    last_error   TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (payment_no, kind)
);

CREATE INDEX mock_callbacks_due ON mock_callbacks (due_at) WHERE state = 'pending';
