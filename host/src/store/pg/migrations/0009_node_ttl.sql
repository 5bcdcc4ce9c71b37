-- Each registration's lease length, so that a claim can tell a lease that
-- lapsed because the database itself was away (the registration's owner
-- is likely alive and about to report) from one whose node went away.
ALTER TABLE nodes ADD COLUMN ttl_ms bigint NOT NULL DEFAULT 10000;
