-- (user, report Message-ID) → when it was read: a DSN or ARF report posted
-- twice counts once.
CREATE TABLE reports (
    user_id bigint      NOT NULL,
    id      text        NOT NULL,
    read_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, id)
);

-- Server secrets (unsubscribe link signing), made on first use; every node
-- signs and checks with the same ones.
CREATE TABLE secrets (
    name  text  PRIMARY KEY,
    value bytea NOT NULL
);
