CREATE TABLE orders (
    id                 BIGSERIAL PRIMARY KEY,
    order_no           TEXT NOT NULL UNIQUE,
    user_id            BIGINT NOT NULL,
    total_amount_cents BIGINT NOT NULL CHECK (total_amount_cents > 0),
    -- 1 pending, 2 paid, 3 shipped, 4 completed, 5 cancelled (the original's enum)
    status             SMALLINT NOT NULL CHECK (status BETWEEN 1 AND 5),
    address            TEXT NOT NULL,
    phone              TEXT NOT NULL,
    remark             TEXT NOT NULL DEFAULT '',
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    paid_at            TIMESTAMPTZ,
    shipped_at         TIMESTAMPTZ,
    completed_at       TIMESTAMPTZ,
    cancelled_at       TIMESTAMPTZ,
    -- Follow-up calls to the product service that must happen once the status changed; a
    -- sweeper retries them until they succeed, so no stock leaks and no sale goes uncounted.
    stock_released     BOOLEAN NOT NULL DEFAULT false,
    sales_recorded     BOOLEAN NOT NULL DEFAULT false
);

CREATE INDEX orders_user_created ON orders (user_id, created_at DESC, id DESC);
CREATE INDEX orders_pending_created ON orders (created_at) WHERE status = 1;
CREATE INDEX orders_release_due ON orders (id) WHERE status = 5 AND NOT stock_released;
CREATE INDEX orders_sales_due ON orders (id) WHERE status = 2 AND NOT sales_recorded;

CREATE TABLE order_items (
    id          BIGSERIAL PRIMARY KEY,
    order_id    BIGINT NOT NULL REFERENCES orders (id),
    product_id  BIGINT NOT NULL,
    -- A snapshot of the product when ordered.
    name        TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents > 0),
    quantity    BIGINT NOT NULL CHECK (quantity > 0),
    image       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX order_items_order ON order_items (order_id);
