-- Notification feeds (API.md, "Notifications"): one row per group of a user's feed, kept by
-- the writer in the transaction of the event that makes or grows it (chat/store/notify.py).
-- Feeds start with this migration: events stored before it notify nobody.

CREATE TABLE notifications (
    "user"          TEXT NOT NULL,
    key             TEXT NOT NULL,               -- the group, unique in the user's feed
    id              BIGINT NOT NULL,             -- the id of the group's first event
    kind            TEXT NOT NULL,
    room            TEXT NOT NULL,
    message_id      BIGINT,
    emoji           TEXT,
    verb            TEXT,
    object          TEXT,
    actors          TEXT NOT NULL,               -- JSON: the three newest distinct actors
    actor_count     BIGINT NOT NULL,
    count           BIGINT NOT NULL,
    first_at        TEXT NOT NULL,
    latest_at       TEXT NOT NULL,
    latest_event_id BIGINT NOT NULL,
    -- a feed's pages, its replay after a resume point, the groups a read mark passes over
    -- (one event updates at most one group of a user: unique)
    PRIMARY KEY ("user", latest_event_id)
);
-- The group an event joins, found by its key: only groups that grow need it, and a mention's
-- group never grows. Left out of this index, a mention costs one b-tree instead of two (a
-- third less time and WAL per mention, bench/notifications.py).
CREATE UNIQUE INDEX notifications_key ON notifications ("user", key) WHERE kind <> 'mention';

-- Every distinct actor of a group (actor_count counts them); mention groups hold one event
-- and keep none here.
CREATE TABLE notification_actors (
    "user" TEXT NOT NULL,
    key    TEXT NOT NULL,
    actor  TEXT NOT NULL,
    PRIMARY KEY ("user", key, actor)
);

-- Per user: groups with latest_event_id <= read_until are read; `unread` counts the others,
-- kept exact by the writer so that the bell's count costs one row however long the feed.
CREATE TABLE notification_marks (
    "user"     TEXT PRIMARY KEY,
    read_until BIGINT NOT NULL,
    unread     BIGINT NOT NULL
);
