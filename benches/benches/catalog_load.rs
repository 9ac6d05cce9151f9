//! `catalog_load`: loading and fully validating a generated catalog of 1,000 items (the 15
//! example items, each copied with a fresh id), beside two floors measured in the same run:
//! parsing the same files with our position-keeping YAML parser only, and with `serde_yaml`
//! into `serde_json::Value` (no positions, no validation). Target: the full load of 1,000
//! items under 300 ms in release on a 2-core machine.

use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pao_core::catalog::{Catalog, LoadOptions};

const ITEMS: usize = 1_000;

fn examples() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/catalog");
    let mut files = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("examples/catalog") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml")
                && p.file_name().is_some_and(|n| n != "catalog.yaml")
            {
                files.push(p);
            }
        }
    }
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read"))
        .collect()
}

/// Writes 1,000 items (copies of the examples with unique ids) into a fresh folder.
fn generate() -> (PathBuf, Vec<String>) {
    let dir = std::env::temp_dir().join(format!("pao-bench-catalog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let sources = examples();
    let mut texts = Vec::with_capacity(ITEMS);
    for i in 0..ITEMS {
        let src = &sources[i % sources.len()];
        let value: serde_json::Value = serde_yaml::from_str(src).expect("example parses");
        let id = value["metadata"]["id"].as_str().expect("id").to_string();
        let text = src.replacen(
            &format!("\n  id: {id}\n"),
            &format!("\n  id: {id}-{i}\n"),
            1,
        );
        assert_ne!(&text, src, "id line found in {id}");
        let sub = dir.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&sub).expect("sub dir");
        std::fs::write(sub.join(format!("item-{i}.yaml")), &text).expect("write");
        texts.push(text);
    }
    (dir, texts)
}

fn options() -> LoadOptions {
    LoadOptions::default()
        .with_plugin("servicenow-incident", None)
        .with_plugin("slack-notify", None)
}

fn bench(c: &mut Criterion) {
    let (dir, texts) = generate();
    let opts = options();
    // Correctness before timing: every generated item loads clean.
    let catalog = Catalog::load(&dir, &opts).expect("load");
    assert!(
        !catalog.has_errors(),
        "{}",
        pao_core::catalog::render_all(catalog.diagnostics())
    );
    assert_eq!(catalog.len(), ITEMS);

    let mut g = c.benchmark_group("catalog_load");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ITEMS as u64));
    g.bench_function("pao_full_load", |b| {
        b.iter(|| Catalog::load(&dir, &opts).expect("load").len())
    });
    g.bench_function("pao_yaml_only", |b| {
        b.iter(|| {
            texts
                .iter()
                .map(|t| {
                    pao_core::catalog::yaml::parse(t)
                        .expect("parse")
                        .values
                        .len()
                })
                .sum::<usize>()
        })
    });
    g.bench_function("serde_yaml_only", |b| {
        b.iter(|| {
            texts
                .iter()
                .map(|t| {
                    serde_yaml::from_str::<serde_json::Value>(t)
                        .expect("parse")
                        .as_object()
                        .map_or(0, |m| m.len())
                })
                .sum::<usize>()
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
