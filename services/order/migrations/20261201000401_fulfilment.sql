-- Fulfilment: a paid order is shipped by the shop (carrier and tracking number recorded) and
-- completed when the buyer confirms receipt, or by itself ORDER_AUTO_COMPLETE_SECS after
-- shipping. Empty until the order ships.
ALTER TABLE orders
    ADD COLUMN carrier     TEXT NOT NULL DEFAULT '',
    ADD COLUMN tracking_no TEXT NOT NULL DEFAULT '';

-- Sales still owed to the product service once an order has moved past paid: shipping does
-- not wait for the sales count, so the sweeper looks at shipped and completed orders too.
DROP INDEX orders_sales_due;
CREATE INDEX orders_sales_due ON orders (id) WHERE status IN (2, 3, 4) AND NOT sales_recorded;

-- The admins' list of every order, newest first, of all statuses or one.
CREATE INDEX orders_created ON orders (created_at DESC, id DESC);
CREATE INDEX orders_status_created ON orders (status, created_at DESC, id DESC);

-- Shipped orders waiting to complete by themselves, oldest shipment first.
CREATE INDEX orders_shipped_at ON orders (shipped_at) WHERE status = 3;
