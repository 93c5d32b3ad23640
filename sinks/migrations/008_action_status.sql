-- Actions that get done (docs/design.md 12): the status history of every action, one row per
-- `ActionStatus` record of topic `action-status` (open, acknowledged, reassigned, overdue,
-- done, lapsed), keyed so that a redelivered record is dropped by ON CONFLICT DO NOTHING
-- (event_key: the status event's id, '' for the changes no event made).
--
-- Each action row carries its current status, derived from that history alone
-- (`action_status_current`), whichever of the action and its statuses the sink met first: the
-- sink re-derives the actions its batch touched (an action row landing, a status arriving).
-- The latest change (event time, then the order the worker emitted them) gives status, the
-- latest named owner gives owner; done and lapsed are final. acknowledged_at is the first
-- acknowledgement or reassignment, done_at and resolution come from `done`, overdue_at from
-- `overdue`. Rows written before this migration keep a NULL status (unknown); new rows
-- start `open`.

CREATE TABLE action_status_history (
    action_id       text        NOT NULL,
    customer_id     text        NOT NULL,
    rule            text        NOT NULL,
    destination     text        NOT NULL,
    status          text        NOT NULL,
    owner           text,
    resolution      text,
    at              timestamptz NOT NULL,
    event_id        text,
    event_key       text        NOT NULL,
    kafka_topic     text,
    kafka_partition integer,
    kafka_offset    bigint,
    inserted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (action_id, status, at, event_key)
);
CREATE INDEX action_status_history_customer_time ON action_status_history (customer_id, at);

ALTER TABLE actions
    ADD COLUMN status          text,
    ADD COLUMN owner           text,
    ADD COLUMN acknowledged_at timestamptz,
    ADD COLUMN done_at         timestamptz,
    ADD COLUMN resolution      text,
    ADD COLUMN overdue_at      timestamptz;
ALTER TABLE actions ALTER COLUMN status SET DEFAULT 'open';

CREATE VIEW action_status_current AS
SELECT
    h.action_id,
    h.customer_id,
    CASE
        WHEN bool_or(h.status = 'done') THEN 'done'
        WHEN bool_or(h.status = 'lapsed') THEN 'lapsed'
        ELSE (array_agg(h.status ORDER BY h.at DESC, h.kafka_offset DESC NULLS LAST,
              array_position(ARRAY['open', 'acknowledged', 'reassigned', 'overdue'], h.status)
              DESC))[1]
    END                                                             AS status,
    (array_agg(h.owner ORDER BY h.at DESC, h.kafka_offset DESC NULLS LAST)
        FILTER (WHERE h.owner IS NOT NULL))[1]                      AS owner,
    min(h.at) FILTER (WHERE h.status IN ('acknowledged', 'reassigned')) AS acknowledged_at,
    min(h.at) FILTER (WHERE h.status = 'done')                      AS done_at,
    (array_agg(h.resolution ORDER BY h.at, h.kafka_offset NULLS LAST)
        FILTER (WHERE h.status = 'done'))[1]                        AS resolution,
    min(h.at) FILTER (WHERE h.status = 'overdue')                   AS overdue_at
FROM action_status_history h
GROUP BY h.action_id, h.customer_id;

-- The timeline shows each action's status, owner and lateness: `overdue` (it went overdue and
-- is not done), `late_s` (seconds past due_by it was done, 0 when on time), and a `status`
-- entry for the changes no event made (overdue, lapsed: the others are events already).
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
    NULL::numeric                                   AS relationship_balance,
    NULL::text                                      AS status,
    NULL::text                                      AS owner,
    NULL::timestamptz                               AS due_by,
    NULL::boolean                                   AS overdue,
    NULL::bigint                                    AS late_s
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
    NULL::numeric,
    NULL::text,
    NULL::text,
    NULL::timestamptz,
    NULL::boolean,
    NULL::bigint
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
    END,
    a.status,
    a.owner,
    a.due_by,
    a.overdue_at IS NOT NULL AND a.done_at IS NULL AND a.status IS DISTINCT FROM 'lapsed',
    CASE
        WHEN a.done_at IS NOT NULL AND a.due_by IS NOT NULL
        THEN greatest(0, floor(extract(epoch FROM a.done_at - a.due_by)))::bigint
    END
FROM actions a
UNION ALL
SELECT
    h.customer_id,
    h.at,
    'status'::text,
    h.action_id || ':' || h.status,
    NULL::text,
    h.status,
    format('action %s %s (%s)', h.action_id, h.status, h.destination),
    NULL::text,
    h.rule,
    h.destination,
    NULL::integer,
    NULL::text,
    h.action_id,
    NULL::numeric,
    h.status,
    h.owner,
    NULL::timestamptz,
    h.status = 'overdue',
    NULL::bigint
FROM action_status_history h
WHERE h.event_id IS NULL AND h.status IN ('overdue', 'lapsed');
