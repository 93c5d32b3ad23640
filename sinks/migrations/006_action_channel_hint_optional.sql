-- Revision 3 of the actions: `channel_hint` is where a person can reach the customer (the
-- preferred channel, else the last channel the customer used themselves: call, email or web),
-- NULL when no such channel is known (docs/design.md 4.1). Older rows keep their channel. The
-- views read the column as it is: the customer timeline shows an action with no channel then.

ALTER TABLE actions ALTER COLUMN channel_hint DROP NOT NULL;
