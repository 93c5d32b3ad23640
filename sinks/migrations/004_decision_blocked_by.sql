-- Revision 2 of the decisions: `blocked_by`, the action_id of the action that caused a
-- cool_down, contact_cap (a deferral), already_raised or already_waiting. Older rows keep NULL.
-- The timeline names it, so a deferred or suppressed decision says which action was in the way
-- (deferred and expired decisions read e.g. "thank_meter_reading deferred (contact_cap,
-- blocked by 3f2a…)" and "thank_meter_reading suppressed (expired)").

ALTER TABLE decisions ADD COLUMN blocked_by text;

CREATE OR REPLACE VIEW customer_timeline AS
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
        || CASE
            WHEN d.reason <> d.outcome AND d.blocked_by IS NOT NULL
                THEN ' (' || d.reason || ', blocked by ' || d.blocked_by || ')'
            WHEN d.reason <> d.outcome THEN ' (' || d.reason || ')'
            ELSE ''
        END,
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
