-- A mailbox provider's in-flight calls, shared by every node: slot N of
-- its `max_in_flight` is held by `node` while that node's lease holds, so
-- a node that went away frees its slots with its lease.
CREATE TABLE provider_slots (
    provider text   NOT NULL,
    slot     int    NOT NULL,
    node     bigint NOT NULL,
    PRIMARY KEY (provider, slot)
);

-- A mailbox provider's backoff on the database's clock
-- (`domain::backoff`): clear, waiting until `at`, or probing with a lease
-- until `at`.
CREATE TABLE provider_backoffs (
    provider text        PRIMARY KEY,
    state    text        NOT NULL,
    at       timestamptz,
    wait_ms  bigint      NOT NULL,
    backoffs bigint      NOT NULL
);
