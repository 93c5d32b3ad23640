-- Relationship strength per customer (DESIGN.md section 9): the ledger of section 5 as the
-- engine saw it on every action it fired. Each action carries the customer's positives,
-- negatives and balance over the ledger window ending at its triggered_at
-- (details.relationship_positives / _negatives / _balance); actions written before the
-- counts existed have only the balance, and NULL counts. A value that is not an integer is
-- NULL, never an error. The current strength is the one on the customer's latest action.

CREATE VIEW customer_relationship_history AS
SELECT
    a.customer_id,
    a.triggered_at                                  AS at,
    a.action_id,
    a.rule,
    CASE WHEN a.details ->> 'relationship_positives' ~ '^\s*[0-9]{1,9}\s*$'
         THEN (a.details ->> 'relationship_positives')::integer END AS positives,
    CASE WHEN a.details ->> 'relationship_negatives' ~ '^\s*[0-9]{1,9}\s*$'
         THEN (a.details ->> 'relationship_negatives')::integer END AS negatives,
    CASE WHEN a.details ->> 'relationship_balance' ~ '^\s*[+-]?[0-9]{1,9}\s*$'
         THEN (a.details ->> 'relationship_balance')::integer END   AS balance
FROM actions a
WHERE a.details ? 'relationship_balance';

CREATE VIEW customer_relationship AS
SELECT DISTINCT ON (h.customer_id)
    h.customer_id,
    h.at,
    h.positives,
    h.negatives,
    h.balance,
    h.balance < 0                                   AS in_deficit
FROM customer_relationship_history h
ORDER BY h.customer_id, h.at DESC, h.action_id DESC;
