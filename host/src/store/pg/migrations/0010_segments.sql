-- (user, segment) → the domain's Segment, of one of the user's lists;
-- `delete_list` deletes a list's segments with it.
CREATE SEQUENCE segment_ids;
CREATE TABLE segments (
    user_id bigint NOT NULL,
    id      bigint NOT NULL,
    list_id bigint NOT NULL,
    record  jsonb  NOT NULL,
    PRIMARY KEY (user_id, id)
);
CREATE INDEX segments_list ON segments (list_id);
