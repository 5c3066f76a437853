-- Whether the product service has been told the order is saved (CommitReservation). Until it
-- is, the order's reservation may expire; the sweeper retries the commit, and an order whose
-- reservation expired first is cancelled. Orders from before this migration need no commit.
ALTER TABLE orders ADD COLUMN stock_committed BOOLEAN NOT NULL DEFAULT true;

CREATE INDEX orders_commit_due ON orders (created_at) WHERE status = 1 AND NOT stock_committed;
