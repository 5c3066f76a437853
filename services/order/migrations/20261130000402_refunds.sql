-- When the payment service confirmed the refund of a payment of this order (it was cancelled
-- while, or after, the buyer paid): the order shows it.
ALTER TABLE orders ADD COLUMN refunded_at TIMESTAMPTZ;
