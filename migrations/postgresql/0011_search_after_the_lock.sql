-- Full-text search moves out of the messages table into one of its own, which the writer fills
-- right after a batch's COMMIT, outside the event_ids lock (chat/store/postgres_words.py). The GIN
-- index over to_tsvector(text) (0002) made PostgreSQL tokenize every message and insert its
-- words while the lock was held, about a third of a batch's time under it, and both
-- processes' writes wait on that lock (bench/README.md, "The PostgreSQL store").
--
-- message_words: a message's words. Its rows are written after the commit of the message's
-- batch (from messages.text, so an edit made in between wins), and follow later edits and
-- deletions through the trigger below (SQLite: the trigger of 0002 and 0006 on messages_fts).
-- A search joins it to messages, which decide room and deletion: a deletion that races the
-- words' insert can leave the deleted message's words here, never found.
CREATE TABLE message_words (
    id    BIGINT PRIMARY KEY,
    words TSVECTOR NOT NULL
);
CREATE INDEX message_words_search ON message_words USING GIN (words);

-- search_backlog: the id ranges of batches committed whose words are not written yet. A batch
-- adds its range with its COMMIT and the writer deletes it with the words; a range left behind
-- (a process killed between the two, a statement that failed) is indexed by the next process
-- that starts, and by any running one that finds it still there a minute later.
CREATE TABLE search_backlog (
    first_id BIGINT PRIMARY KEY,
    last_id  BIGINT NOT NULL
);

INSERT INTO message_words (id, words)
    SELECT id, to_tsvector('simple', text) FROM messages WHERE deleted_at IS NULL;
DROP INDEX messages_search;
ANALYZE message_words;  -- the planner's view of the words from the first search on

CREATE FUNCTION message_words_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.deleted_at IS NOT NULL THEN
        DELETE FROM message_words WHERE id = NEW.id;
    ELSE
        INSERT INTO message_words (id, words) VALUES (NEW.id, to_tsvector('simple', NEW.text))
            ON CONFLICT (id) DO UPDATE SET words = excluded.words;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER message_words_follow AFTER UPDATE OF text, deleted_at ON messages
    FOR EACH ROW EXECUTE FUNCTION message_words_follow();
