-- The three record tables the PostgreSQL sink writes: one row per Kafka record, keyed so that a
-- redelivered record is dropped by ON CONFLICT DO NOTHING. Timestamps are UTC timestamptz.

CREATE TABLE actions (
    action_id       text        PRIMARY KEY,
    customer_id     text        NOT NULL,
    rule            text        NOT NULL,
    action          text        NOT NULL,
    rule_version    integer     NOT NULL,
    destination     text        NOT NULL,
    priority        integer     NOT NULL,
    reason          text        NOT NULL,
    evidence        text[]      NOT NULL,
    channel_hint    text        NOT NULL,
    triggered_at    timestamptz NOT NULL,
    due_by          timestamptz,
    details         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    kafka_topic     text,
    kafka_partition integer,
    kafka_offset    bigint,
    inserted_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX actions_customer_time ON actions (customer_id, triggered_at);

CREATE TABLE decisions (
    decision_id     text        PRIMARY KEY,
    customer_id     text        NOT NULL,
    rule            text        NOT NULL,
    rule_version    integer     NOT NULL,
    outcome         text        NOT NULL,
    reason          text        NOT NULL,
    action_id       text,
    evidence        text[]      NOT NULL,
    decided_at      timestamptz NOT NULL,
    kafka_topic     text,
    kafka_partition integer,
    kafka_offset    bigint,
    inserted_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX decisions_customer_time ON decisions (customer_id, decided_at);

CREATE TABLE interaction_events (
    event_id        text             NOT NULL,
    customer_id     text             NOT NULL,
    channel         text             NOT NULL,
    type            text             NOT NULL,
    occurred_at     timestamptz      NOT NULL,
    source          text             NOT NULL DEFAULT '',
    product         text,
    reference       text,
    amount          double precision,
    currency        text,
    due_date        date,
    customer_since  date,
    text            text,
    attributes      jsonb            NOT NULL DEFAULT '{}'::jsonb,
    kafka_topic     text,
    kafka_partition integer,
    kafka_offset    bigint,
    inserted_at     timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, event_id)
);
CREATE INDEX interaction_events_customer_time ON interaction_events (customer_id, occurred_at);
