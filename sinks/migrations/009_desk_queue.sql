-- The agent desk's queue (docs/design.md 13): the open actions of a destination, overdue
-- first, then priority (higher first), then due_by (none last), then the id; all of them or
-- one owner's ("mine"). Both indexes hold that order, so a page is a short index range scan
-- whatever the number of open actions; finished actions leave them (partial indexes).
-- Keep the predicate and the order in step with sinks/desk/queries.py.
CREATE INDEX actions_desk_queue
    ON actions (destination, (overdue_at IS NULL), priority DESC, due_by, action_id)
    INCLUDE (overdue_at)  -- the page's counts (open, overdue) read the index alone
    WHERE status IN ('open', 'acknowledged', 'reassigned', 'overdue');
CREATE INDEX actions_desk_mine
    ON actions (destination, owner, (overdue_at IS NULL), priority DESC, due_by, action_id)
    WHERE status IN ('open', 'acknowledged', 'reassigned', 'overdue');
