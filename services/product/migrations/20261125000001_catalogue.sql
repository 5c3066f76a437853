CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE products (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    price_cents  BIGINT NOT NULL CHECK (price_cents > 0),
    -- The backstop: whatever the code does, stock never goes below zero.
    stock        BIGINT NOT NULL CHECK (stock >= 0),
    category     TEXT NOT NULL,
    images       TEXT[] NOT NULL,
    attributes   JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(attributes) = 'object'),
    sales        BIGINT NOT NULL DEFAULT 0 CHECK (sales >= 0),
    rating_sum   BIGINT NOT NULL DEFAULT 0,
    rating_count BIGINT NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One index per way of listing: newest first (the default), by price, by sales; each also
-- within a category.
CREATE INDEX products_created ON products (created_at DESC, id DESC);
CREATE INDEX products_price ON products (price_cents, id);
CREATE INDEX products_sales ON products (sales DESC, id DESC);
CREATE INDEX products_category_created ON products (category, created_at DESC, id DESC);
CREATE INDEX products_category_price ON products (category, price_cents, id);
CREATE INDEX products_category_sales ON products (category, sales DESC, id DESC);

-- Search matches name, description and category, case-insensitively, anywhere in a word.
CREATE INDEX products_search_trgm ON products
    USING gin ((name || ' ' || description || ' ' || category) gin_trgm_ops);

-- A reservation per order: what it holds and whether it still holds it.
CREATE TABLE stock_reservations (
    order_id   BIGINT PRIMARY KEY,
    state      TEXT NOT NULL CHECK (state IN ('reserved', 'released', 'sold')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE stock_reservation_lines (
    order_id   BIGINT NOT NULL REFERENCES stock_reservations (order_id),
    product_id BIGINT NOT NULL REFERENCES products (id),
    quantity   BIGINT NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);

-- One review per user and product; a new one replaces the old.
CREATE TABLE reviews (
    id         BIGSERIAL PRIMARY KEY,
    product_id BIGINT NOT NULL REFERENCES products (id),
    user_id    BIGINT NOT NULL,
    rating     INT NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment    TEXT NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (product_id, user_id)
);
CREATE INDEX reviews_product_created ON reviews (product_id, created_at DESC, id DESC);
