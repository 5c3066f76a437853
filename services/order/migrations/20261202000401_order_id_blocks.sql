-- Order ids are taken from the sequence in blocks: each nextval() reserves the 50 ids that
-- follow it for the instance that asked, so creating an order costs no round trip of its own
-- (ids stay unique across replicas; an instance that stops leaves the rest of its block unused).
ALTER SEQUENCE orders_id_seq INCREMENT BY 50;
