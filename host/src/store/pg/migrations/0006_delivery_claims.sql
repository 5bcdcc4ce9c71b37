-- A webhook delivery being attempted is claimed by the node attempting
-- it, for as long as that node's lease holds (as queued messages are), so
-- a crashed node's attempts are due again as soon as its lease lapses.
ALTER TABLE webhook_deliveries ADD COLUMN claimed_by bigint;
