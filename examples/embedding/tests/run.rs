//! The embedding example runs to completion, and the guide shows exactly its code.

use std::process::Command;

#[test]
fn the_example_runs_a_request_to_completion() {
    let out = Command::new(env!("CARGO_BIN_EXE_pao-example-embedding"))
        .output()
        .expect("the example starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" is completed"), "{stdout}");
}

#[test]
fn the_guide_shows_this_exact_program() {
    let guide = include_str!("../../../docs/embedding.md");
    let program = include_str!("../src/main.rs");
    assert!(
        guide.contains(&format!("```rust\n{program}```")),
        "docs/embedding.md must quote examples/embedding/src/main.rs verbatim"
    );
    assert!(
        program.lines().count() < 50,
        "the example stays under 50 lines"
    );
}
