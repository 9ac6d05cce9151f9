-- Plugins' key-value data, one namespace per plugin: kept across restarts and shared by
-- replicas, so a plugin that records what it did (a message posted) does not do it twice.
CREATE TABLE plugin_kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (namespace, key)
);
