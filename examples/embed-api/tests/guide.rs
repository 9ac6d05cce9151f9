//! `docs/embedding.md` walks through this example with excerpts of its code: each excerpt
//! must be in the sources as it is quoted, and each route must be in the guide.

const GUIDE: &str = include_str!("../../../docs/embedding.md");
const HEADING: &str = "## Your own HTTP API on the service layer\n";
const SOURCES: &[&str] = &[
    include_str!("../src/lib.rs"),
    include_str!("../src/main.rs"),
    include_str!("../src/api.rs"),
    include_str!("../src/identity.rs"),
    include_str!("../src/sandbox.rs"),
];
const CATALOG: &[&str] = &[
    include_str!("../catalog/sandbox.yaml"),
    include_str!("../catalog/gpu-sandbox.yaml"),
];

/// The guide's section on this example, up to the next section of the same level.
fn section() -> &'static str {
    let start = GUIDE.find(HEADING).expect("the guide has the section");
    let rest = &GUIDE[start + HEADING.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The code blocks fenced as ```lang, with their text up to the closing fence.
fn blocks(lang: &str) -> Vec<&'static str> {
    let open = format!("```{lang}\n");
    let mut found = Vec::new();
    let mut rest = section();
    while let Some(i) = rest.find(&open) {
        let body = &rest[i + open.len()..];
        let end = body.find("```").expect("every block is closed");
        found.push(&body[..end]);
        rest = &body[end + 3..];
    }
    found
}

#[test]
fn the_guide_quotes_the_code_as_it_is() {
    let rust = blocks("rust");
    assert!(rust.len() >= 6, "the walk-through shows the code");
    for block in rust {
        assert!(
            SOURCES.iter().any(|s| s.contains(block)),
            "docs/embedding.md quotes code that is not in examples/embed-api/src:\n{block}"
        );
    }
    let yaml = blocks("yaml");
    assert!(!yaml.is_empty(), "the walk-through shows the approval");
    for block in yaml {
        assert!(
            CATALOG.iter().any(|s| s.contains(block)),
            "docs/embedding.md quotes YAML that is not in examples/embed-api/catalog:\n{block}"
        );
    }
}

#[test]
fn the_guide_lists_every_route() {
    let lib = SOURCES[0];
    let routes: Vec<(&str, &str)> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix(".route(\""))
        .map(|l| {
            let (path, rest) = l.split_once('"').unwrap();
            let method = rest.trim_start_matches(", ").split('(').next().unwrap();
            (path, method)
        })
        .collect();
    assert_eq!(routes.len(), 7, "{routes:?}");
    for (path, method) in routes {
        let row = format!("| `{} {path}` |", method.to_uppercase());
        assert!(
            section().contains(&row),
            "the guide's route table lacks {row}"
        );
    }
}

#[test]
fn the_handlers_call_only_the_service_layer() {
    for (file, text) in [("api.rs", SOURCES[2]), ("identity.rs", SOURCES[3])] {
        for word in ["Store", ".store", "store("] {
            assert!(!text.contains(word), "src/{file} uses the store (`{word}`)");
        }
    }
}
