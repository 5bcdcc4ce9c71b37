-- Users and their API keys (only each key's SHA-256 is stored).
CREATE SEQUENCE user_ids;
CREATE TABLE users (
    id     bigint PRIMARY KEY,
    email  text   NOT NULL,
    record jsonb  NOT NULL
);
CREATE UNIQUE INDEX users_email ON users (lower(email));

CREATE SEQUENCE key_ids;
CREATE TABLE api_keys (
    hash       bytea       PRIMARY KEY,
    user_id    bigint      NOT NULL,
    id         bigint      NOT NULL,
    hint       text        NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX api_keys_user ON api_keys (user_id, id);
