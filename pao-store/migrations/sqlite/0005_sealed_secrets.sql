-- Sealed secrets (pao_core::sealing): each request's data key, wrapped by a key-encryption key
-- that is not in the database, and the values it seals (secret form fields, the inputs of
-- completed actions a rollback replays). Only ciphertext, as base64.
CREATE TABLE sealed_keys (
    request_id TEXT PRIMARY KEY,
    kek_id TEXT NOT NULL,
    wrapped TEXT NOT NULL
);
CREATE INDEX sealed_keys_kek ON sealed_keys (kek_id, request_id);

CREATE TABLE sealed_values (
    request_id TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed TEXT NOT NULL,
    PRIMARY KEY (request_id, name)
);
