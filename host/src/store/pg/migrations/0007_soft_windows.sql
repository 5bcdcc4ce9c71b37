-- (user, address) → the domain's SoftWindow: the address's recent soft
-- bounces, so counting one never reads its whole history. `record` is NULL
-- for the moment between a row's first insert and its first window (the
-- row is the lock two reports on one new address take turns on).
CREATE TABLE soft_windows (
    user_id bigint NOT NULL,
    email   text   NOT NULL,
    record  jsonb,
    PRIMARY KEY (user_id, email)
);
