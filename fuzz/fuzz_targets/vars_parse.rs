//! Arbitrary bytes as a template and as a bare expression: compiling must never panic, and
//! neither must anything done with the result or the error (references, static checks,
//! error display with its caret snippet).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pao_core::vars::{Declarations, Engine, VarError};

fn exercise_error(e: &VarError) {
    let _ = e.to_string();
    let _ = e.line_col();
    let _ = e.snippet();
}

fuzz_target!(|data: &[u8]| {
    let source = String::from_utf8_lossy(data);
    let engine = Engine::new();
    let decl = Declarations {
        fields: ["name".to_string(), "env".to_string()].into(),
        actions: ["tf".to_string()].into(),
        ..Declarations::default()
    };
    match engine.compile(&source) {
        Ok(t) => {
            let _ = t.references();
            for e in t.check(&decl) {
                exercise_error(&e);
            }
        }
        Err(e) => exercise_error(&e),
    }
    match engine.compile_expression(&source) {
        Ok(x) => {
            let _ = x.references();
            for e in x.check(&decl) {
                exercise_error(&e);
            }
        }
        Err(e) => exercise_error(&e),
    }
});
