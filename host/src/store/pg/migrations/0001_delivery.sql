-- The delivery half on PostgreSQL: what several nodes share to send one
-- campaign together. Records are the domain's JSON (as in redb), next to
-- the columns queries select, lock or index by.

-- One row per node incarnation: a restarted node registers anew, so the
-- leases of the one that died stay expired and its late outcomes stay
-- rejected. `lease_until` is moved by heartbeats on the database's clock.
CREATE TABLE nodes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_until timestamptz NOT NULL
);

-- Ids unique across lists, as in redb; taken from one sequence so a
-- subscriber imported after a send starts gets an id above the send's
-- `last_subscriber` (the send waits for imports under way: see
-- ARCHITECTURE.md, "Recipients fixed at send").
CREATE SEQUENCE subscriber_ids;
CREATE TABLE subscribers (
    list_id bigint NOT NULL,
    id      bigint NOT NULL,
    email   text   NOT NULL,
    record  jsonb  NOT NULL,
    PRIMARY KEY (list_id, id)
);
CREATE UNIQUE INDEX subscribers_email ON subscribers (list_id, email);

-- `run` is the CampaignRun (campaign, progress, stats); its row lock
-- serializes every change of a campaign's send across nodes.
CREATE TABLE campaigns (
    id      bigint PRIMARY KEY,
    user_id bigint NOT NULL,
    status  text   NOT NULL,
    run     jsonb  NOT NULL
);
CREATE INDEX campaigns_user ON campaigns (user_id, id);

-- A queued message belongs to the node in `lease_node` while that node's
-- lease holds; NULL means waiting for any node (put off by a clean stop).
CREATE TABLE messages (
    campaign_id   bigint NOT NULL,
    subscriber_id bigint NOT NULL,
    status        text   NOT NULL,
    lease_node    bigint,
    record        jsonb  NOT NULL,
    PRIMARY KEY (campaign_id, subscriber_id)
);
CREATE INDEX messages_queued ON messages (campaign_id, lease_node) WHERE status = 'queued';

-- Local-time subscribers whose time has not come, in due order.
CREATE TABLE due (
    campaign_id   bigint      NOT NULL,
    due_at        timestamptz NOT NULL,
    subscriber_id bigint      NOT NULL,
    PRIMARY KEY (campaign_id, due_at, subscriber_id)
);

-- (user, lower-case address) → the domain's Suppression.
CREATE TABLE suppressions (
    user_id bigint NOT NULL,
    email   text   NOT NULL,
    record  jsonb  NOT NULL,
    PRIMARY KEY (user_id, email)
);

-- Shared pacers: the next free send slot of a rate every node obeys
-- (a campaign's send_rate, a transport's rate_limit).
CREATE TABLE pacers (
    name      text        PRIMARY KEY,
    next_slot timestamptz NOT NULL
);

-- An address's bounces (the domain's Bounce), for the soft-bounce window.
CREATE TABLE bounces (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL,
    email   text   NOT NULL,
    record  jsonb  NOT NULL
);
CREATE INDEX bounces_address ON bounces (user_id, email);
