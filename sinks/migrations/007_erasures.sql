-- Erasures the PostgreSQL sink completed (docs/design.md 10.1): one row per erasure marker it
-- met (an erasure record on interactions, a marker on an action topic or decisions), written in
-- the transaction that deleted the customer's rows of that topic. The customer is named by the
-- keyed hash of their id (HMAC under MOMENTS_ID_HASH_KEY), never in clear; `removed` holds the
-- rows deleted per table. `moments forget --wait` reads this table.

CREATE TABLE erasures (
    customer_hash   text        NOT NULL,
    erased_at_ms    bigint      NOT NULL,
    topic           text        NOT NULL,
    removed         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    completed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_hash, erased_at_ms, topic)
);
