-- What the sink's COPY of new actions pays per row, made smaller (docs/design.md 12 and 13).
--
-- 1. The desk's "mine" queue reads one owner's unfinished actions: an action nobody owns is
--    never on it. Its index (migration 009) now holds only actions with an owner, so a new
--    action (owner NULL until a status names one) costs no b-tree insert and WAL record in
--    it; the status update that names an owner adds the row, as it did before. The query's
--    `owner = %(owner)s` implies `owner IS NOT NULL`: the planner still reads this index for
--    a page of "mine" (same key, same order).
DROP INDEX actions_desk_mine;
CREATE INDEX actions_desk_mine
    ON actions (destination, owner, (overdue_at IS NULL), priority DESC, due_by, action_id)
    WHERE status IN ('open', 'acknowledged', 'reassigned', 'overdue') AND owner IS NOT NULL;

-- 2. Statuses that came before their action (another topic): the ids of those actions, until
--    the action row lands and the sink derives its current status from the history. Before
--    this table the sink looked up every new action in the history; now a batch asks this
--    (usually empty) table once. Only ids: the history holds the rest, and an erasure that
--    deletes an action's history deletes its id here too.
CREATE TABLE action_status_waiting (
    action_id text PRIMARY KEY
);
INSERT INTO action_status_waiting (action_id)
SELECT DISTINCT h.action_id
FROM action_status_history h
WHERE h.status <> 'open'
  AND NOT EXISTS (SELECT 1 FROM actions a WHERE a.action_id = h.action_id);
