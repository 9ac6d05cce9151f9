-- The catalog item definitions requests were admitted with, one row per distinct file
-- content: a request runs the definition it was submitted and approved against, also after
-- the catalog changes or the replica that admitted it restarts.
CREATE TABLE item_definitions (
    hash TEXT PRIMARY KEY,
    item_id TEXT NOT NULL,
    source TEXT NOT NULL
);
