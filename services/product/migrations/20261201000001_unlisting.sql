-- An admin can take a product off sale and put it back. Unlisted, it is left out of lists,
-- searches and batched reads, its detail is not found, and no new reservation takes it;
-- orders that hold it keep their lines, and its stock and sales move as those orders settle.
ALTER TABLE products ADD COLUMN listed BOOLEAN NOT NULL DEFAULT true;
