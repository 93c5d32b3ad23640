-- One index per table: the key that drops redelivered records also leads with customer_id, so it
-- is the way to one customer's rows too (the timeline reads every table by customer_id). Each
-- index costs the sink's COPY a b-tree insert and its WAL per row, so the second one goes.
-- action_id and decision_id are hashes over the customer among others, so (customer_id, id) is
-- unique exactly when the id is.

ALTER TABLE actions
    DROP CONSTRAINT actions_pkey,
    ADD CONSTRAINT actions_pkey PRIMARY KEY (customer_id, action_id);
DROP INDEX actions_customer_time;

ALTER TABLE decisions
    DROP CONSTRAINT decisions_pkey,
    ADD CONSTRAINT decisions_pkey PRIMARY KEY (customer_id, decision_id);
DROP INDEX decisions_customer_time;

DROP INDEX interaction_events_customer_time;
