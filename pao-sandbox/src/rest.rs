//! Fake: Generic JSON resource APIs (DNS, Kubernetes provisioner, Kafka REST, Grafana, Vault, IdP, Redis admin) used by the example catalog's rest actions.
//!
//! Placeholder; filled by the issue that needs it.
