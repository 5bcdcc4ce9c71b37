-- (user, domain) → when it was granted: the domains a user's campaigns may
-- send from (domain::sender).
CREATE TABLE sender_domains (
    user_id  bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    domain   text        NOT NULL,
    added_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, domain)
);
