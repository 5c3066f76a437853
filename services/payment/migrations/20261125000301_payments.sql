-- Payments on the provider. Status: 1 pending, 2 success, 3 failed, 4 cancelled (superseded by
-- a newer payment of the same order). Type: 1 Alipay, 2 WeChat Pay, 3 card.
CREATE TABLE payments (
    id           BIGSERIAL PRIMARY KEY,
    payment_no   TEXT NOT NULL,
    user_id      BIGINT NOT NULL,
    order_id     BIGINT NOT NULL,
    payment_type SMALLINT NOT NULL CHECK (payment_type IN (1, 2, 3)),
    amount_cents BIGINT NOT NULL CHECK (amount_cents >= 0),
    status       SMALLINT NOT NULL DEFAULT 1 CHECK (status IN (1, 2, 3, 4)),
    pay_url      TEXT NOT NULL,
    qr_code      TEXT NOT NULL,
    -- The provider's own reference, once it has answered.
    trade_no     TEXT NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    paid_at      TIMESTAMPTZ,
    -- A payment is paid exactly when it succeeded.
    CHECK ((status = 2) = (paid_at IS NOT NULL))
);

-- Callbacks find a payment by its number; numbers are never reused.
CREATE UNIQUE INDEX payments_payment_no_key ON payments (payment_no);
-- "The order's latest payment".
CREATE INDEX payments_order_latest ON payments (order_id, id);
-- The backstop for "one pending payment per order", whatever the code does.
CREATE UNIQUE INDEX payments_one_pending_per_order ON payments (order_id) WHERE status = 1;

-- Idempotency-Key of payment creation: per user, the request's fingerprint and the first reply.
-- Only successful creations are recorded, so a request that failed may be retried with its key.
CREATE TABLE idempotency_keys (
    user_id         BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL,
    -- SHA-256 of the request's order, type and amount.
    request_hash    BYTEA NOT NULL CHECK (octet_length(request_hash) = 32),
    payment_id      BIGINT NOT NULL REFERENCES payments (id),
    payment_no      TEXT NOT NULL,
    pay_url         TEXT NOT NULL,
    qr_code         TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, idempotency_key)
);

-- Pruning scans by age.
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
