//! Checks that span the repository, kept out of the published crates so that each of those
//! packages on its own: the guides in `docs/` are read at compile time here (their Rust
//! examples run as doctests below; `tests/` checks their tables and configuration examples),
//! and `tests/copies.rs` fails when a file two crates keep a copy of differs between them.
//!
//! Run with `cargo test -p pao-repo-checks` (doctests: `--doc`).

/// The Rust examples of the language reference (`docs/variables.md`), run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/variables.md")]
pub struct LanguageReference;
