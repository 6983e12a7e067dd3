-- Names sort and page in byte order (code point order), as on SQLite, whatever collation the
-- database was made with: on a database made with en-US (the default of many managed
-- servers) the room list, its pages, the members and the users came in another order than
-- on SQLite (`k_` before `k-`, `_x` first, `Carol` after `bob`). The statements that sort or
-- page by a name say `COLLATE "C"` (chat/store/postgres.py, placeholders); the room list's
-- pages (`name > ? ORDER BY name`) walk this index. The columns keep their collation, so the
-- migration changes no result type under a running process and locks nothing for long.
CREATE INDEX rooms_name_bytes ON rooms (name COLLATE "C");
