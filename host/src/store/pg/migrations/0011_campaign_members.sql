-- (campaign, subscriber): who a campaign that names a segment sends to,
-- fixed in the transaction that starts its send (`campaigns::apply`);
-- the claims walk these instead of the list.
CREATE TABLE campaign_members (
    campaign_id   bigint NOT NULL,
    subscriber_id bigint NOT NULL,
    PRIMARY KEY (campaign_id, subscriber_id)
);
