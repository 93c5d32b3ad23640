-- One row per thing that happened to a customer: the interaction events, the engine's decisions
-- and the actions it fired, with a one-line summary an agent can read. The relationship balance
-- is known where an action carries it (details.relationship_balance). Order by (at, kind, id):
-- a view has no order of its own.

CREATE VIEW customer_timeline AS
SELECT
    e.customer_id,
    e.occurred_at                                   AS at,
    'event'::text                                   AS kind,
    e.event_id                                      AS id,
    e.channel                                       AS channel,
    e.type                                          AS name,
    concat_ws(' · ',
        e.type,
        e.product,
        e.reference,
        CASE WHEN e.amount IS NOT NULL THEN concat_ws(' ', e.amount::text, e.currency) END,
        left(e.text, 200))                          AS summary,
    e.source                                        AS source,
    NULL::text                                      AS rule,
    NULL::text                                      AS destination,
    NULL::integer                                   AS priority,
    NULL::text                                      AS outcome,
    e.reference                                     AS reference,
    NULL::numeric                                   AS relationship_balance
FROM interaction_events e
UNION ALL
SELECT
    d.customer_id,
    d.decided_at,
    'decision'::text,
    d.decision_id,
    NULL::text,
    d.rule,
    d.rule || ' ' || d.outcome
        || CASE WHEN d.reason <> d.outcome THEN ' (' || d.reason || ')' ELSE '' END,
    NULL::text,
    d.rule,
    NULL::text,
    NULL::integer,
    d.outcome,
    NULL::text,
    NULL::numeric
FROM decisions d
UNION ALL
SELECT
    a.customer_id,
    a.triggered_at,
    'action'::text,
    a.action_id,
    a.channel_hint,
    a.action,
    format('%s → %s (priority %s): %s', a.action, a.destination, a.priority, a.reason),
    NULL::text,
    a.rule,
    a.destination,
    a.priority,
    NULL::text,
    NULL::text,
    CASE
        WHEN a.details ->> 'relationship_balance' ~ '^\s*[+-]?[0-9]+(\.[0-9]+)?\s*$'
        THEN (a.details ->> 'relationship_balance')::numeric
    END
FROM actions a;
