-- Campaign ids, unique across users.
CREATE SEQUENCE campaign_ids;
