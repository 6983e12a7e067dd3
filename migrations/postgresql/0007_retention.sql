-- Retention (CHAT_RETENTION_DAYS, issue 17): the newest event id that retention may have
-- deleted. A stream that resumes from an older id gets `reset` (reason "expired"): the events
-- after its resume point are no longer all there. One row, written by the writer in the
-- transaction that deletes (chat/store/retention.py).
CREATE TABLE retention (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    pruned_through BIGINT NOT NULL
);
