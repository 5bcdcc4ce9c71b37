-- Lists and the webhook outbox.

-- The list row is the lock between imports and a send's start: imports
-- hold it (FOR NO KEY UPDATE) from taking ids to commit, a send reads the
-- list's last subscriber under FOR SHARE, so it waits for imports under
-- way and later ones get larger ids. `record` is the domain's List, its
-- subscriber_count kept by the imports that hold the lock.
CREATE SEQUENCE list_ids;
CREATE TABLE lists (
    id      bigint PRIMARY KEY,
    user_id bigint NOT NULL,
    record  jsonb  NOT NULL
);
CREATE INDEX lists_user ON lists (user_id, id);

-- campaign → list, kept when a campaign is deleted: unsubscribe links in
-- mail it sent keep working (RFC 8058).
CREATE TABLE deleted_campaigns (
    id      bigint PRIMARY KEY,
    list_id bigint NOT NULL
);

-- (user, webhook) → the domain's Webhook.
CREATE SEQUENCE webhook_ids;
CREATE TABLE webhooks (
    user_id bigint NOT NULL,
    id      bigint NOT NULL,
    record  jsonb  NOT NULL,
    PRIMARY KEY (user_id, id)
);

-- One event for one webhook; `due_at` is set while an attempt is still to
-- be made, so each webhook's queue is an index range of its own.
CREATE SEQUENCE webhook_delivery_ids;
CREATE TABLE webhook_deliveries (
    webhook_id bigint      NOT NULL,
    id         bigint      NOT NULL,
    due_at     timestamptz,
    record     jsonb       NOT NULL,
    PRIMARY KEY (webhook_id, id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (webhook_id, due_at, id) WHERE due_at IS NOT NULL;
