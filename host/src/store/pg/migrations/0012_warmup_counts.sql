-- Messages a warming-up transport was handed per UTC day, shared by
-- every node (`domain::warmup`).
CREATE TABLE warmup_counts (
    transport text   NOT NULL,
    day       date   NOT NULL,
    sent      bigint NOT NULL,
    PRIMARY KEY (transport, day)
);
