-- Fewer indexes for the sink's COPY to maintain (each costs a b-tree insert and its WAL per row).
-- interaction_events: its key (customer_id, event_id) already leads with the customer, so the
-- timeline reads it by customer without the second index. actions and decisions keep their
-- primary keys on action_id / decision_id (the contract: idempotent by id) and the
-- (customer_id, time) index the timeline and per-customer queries need.

DROP INDEX interaction_events_customer_time;
