-- Names sort and page in byte order (code point order), as on SQLite, whatever collation the
-- database was made with: on a database made with en-US (the default of many managed
-- servers) the room list, its pages (`name > ?`), the members and the users came in another
-- order than on SQLite (`k_` before `k-`, `_x` first, `Carol` after `bob`). The columns that
-- are sorted or paged by take the "C" collation; their indexes are rebuilt with it. Equality
-- with the other name columns (joins) is the same under any deterministic collation.
ALTER TABLE rooms ALTER COLUMN name TYPE TEXT COLLATE "C";
ALTER TABLE members ALTER COLUMN "user" TYPE TEXT COLLATE "C";
ALTER TABLE users ALTER COLUMN name TYPE TEXT COLLATE "C";
ALTER TABLE reactions ALTER COLUMN author TYPE TEXT COLLATE "C";
ALTER TABLE read_markers ALTER COLUMN room TYPE TEXT COLLATE "C";
