//! Catalog search with tantivy: an in-memory index over name, description, tags, id and
//! category, built once per catalog (the catalog in service is compared by identity, so a
//! search does not look at the items to know the index is current).
//! Typo tolerance comes from fuzzy term queries (edit distance 1 for words of 4+ letters,
//! 2 for 8+), highlights from tantivy's snippet generator.

use std::sync::{Arc, Mutex};

use pao_core::catalog::Catalog;
use serde_json::{Value, json};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, STORED, STRING, Schema, TEXT};
use tantivy::snippet::SnippetGenerator;
use tantivy::{Index, IndexReader, Term, doc};

use crate::error::ApiError;

/// One hit.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Item id.
    pub id: String,
    /// Relevance.
    pub score: f32,
    /// `{ "name": "...<mark>x</mark>...", "description": ... }`.
    pub highlights: Value,
}

struct Built {
    /// The catalog the index was built from.
    catalog: Arc<Catalog>,
    _index: Index,
    reader: IndexReader,
}

/// The search index, rebuilt lazily when the catalog it was built from changed.
#[derive(Clone)]
pub struct CatalogSearch {
    fields: Fields,
    built: Arc<Mutex<Option<Arc<Built>>>>,
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    name: Field,
    description: Field,
    tags: Field,
    category: Field,
}

impl Default for CatalogSearch {
    fn default() -> Self {
        CatalogSearch::new()
    }
}

impl CatalogSearch {
    /// An empty index.
    pub fn new() -> CatalogSearch {
        let (_, fields) = schema();
        CatalogSearch {
            fields,
            built: Arc::default(),
        }
    }

    fn index_for(&self, catalog: &Arc<Catalog>) -> Result<Arc<Built>, ApiError> {
        let mut guard = self
            .built
            .lock()
            .map_err(|_| ApiError::unavailable("search index poisoned"))?;
        if let Some(b) = guard.as_ref()
            && Arc::ptr_eq(&b.catalog, catalog)
        {
            return Ok(b.clone());
        }
        let b = Arc::new(
            build(catalog.clone())
                .map_err(|e| ApiError::unavailable(format!("search index: {e}")))?,
        );
        *guard = Some(b.clone());
        Ok(b)
    }

    /// At most `limit` items matching `q` that pass `visible`, best first, out of the best
    /// `candidates`. Only the hits returned are highlighted.
    pub fn search(
        &self,
        catalog: &Arc<Catalog>,
        q: &str,
        (limit, candidates): (usize, usize),
        visible: impl Fn(&str) -> bool,
    ) -> Result<Vec<Hit>, ApiError> {
        let built = self.index_for(catalog)?;
        let f = self.fields;
        let words: Vec<String> = q
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .take(16)
            .collect();
        if words.is_empty() {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for w in &words {
            let distance = match w.chars().count() {
                0..=3 => 0,
                4..=7 => 1,
                _ => 2,
            };
            for (field, boost) in [(f.name, 3.0), (f.tags, 2.0), (f.description, 1.0)] {
                let term = Term::from_field_text(field, w);
                let exact: Box<dyn Query> =
                    Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs));
                clauses.push((Occur::Should, Box::new(BoostQuery::new(exact, boost * 2.0))));
                if distance > 0 {
                    let fuzzy: Box<dyn Query> =
                        Box::new(FuzzyTermQuery::new(term.clone(), distance, true));
                    clauses.push((Occur::Should, Box::new(BoostQuery::new(fuzzy, boost))));
                    // Prefix matches for as-you-type search.
                    let prefix: Box<dyn Query> =
                        Box::new(FuzzyTermQuery::new_prefix(term, 0, true));
                    clauses.push((
                        Occur::Should,
                        Box::new(BoostQuery::new(prefix, boost * 0.5)),
                    ));
                }
            }
            let id_term = Term::from_field_text(f.category, w);
            clauses.push((
                Occur::Should,
                Box::new(TermQuery::new(id_term, IndexRecordOption::Basic)),
            ));
        }
        let query = BooleanQuery::new(clauses);
        let searcher = built.reader.searcher();
        let top = searcher
            .search(
                &query,
                &TopDocs::with_limit(candidates.max(1)).order_by_score(),
            )
            .map_err(|e| ApiError::unavailable(format!("search: {e}")))?;
        let mut name_snip = SnippetGenerator::create(&searcher, &query, f.name).ok();
        let mut desc_snip = SnippetGenerator::create(&searcher, &query, f.description).ok();
        if let Some(s) = name_snip.as_mut() {
            s.set_max_num_chars(200);
        }
        if let Some(s) = desc_snip.as_mut() {
            s.set_max_num_chars(240);
        }
        let mut hits = Vec::new();
        for (score, addr) in top {
            if hits.len() >= limit {
                break;
            }
            let d: tantivy::TantivyDocument = searcher
                .doc(addr)
                .map_err(|e| ApiError::unavailable(format!("search: {e}")))?;
            use tantivy::schema::Value as _;
            let id = d
                .get_first(f.id)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            if !visible(&id) {
                continue;
            }
            let mark = |g: &Option<SnippetGenerator>| -> Value {
                g.as_ref()
                    .map(|g| g.snippet_from_doc(&d))
                    .filter(|s| !s.highlighted().is_empty())
                    .map(|mut s| {
                        s.set_snippet_prefix_postfix("<mark>", "</mark>");
                        Value::String(s.to_html())
                    })
                    .unwrap_or(Value::Null)
            };
            hits.push(Hit {
                id,
                score,
                highlights: json!({ "name": mark(&name_snip), "description": mark(&desc_snip) }),
            });
        }
        Ok(hits)
    }
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let id = b.add_text_field("id", STRING | STORED);
    let name = b.add_text_field("name", TEXT | STORED);
    let description = b.add_text_field("description", TEXT | STORED);
    let tags = b.add_text_field("tags", TEXT | STORED);
    let category = b.add_text_field("category", STRING | STORED);
    (
        b.build(),
        Fields {
            id,
            name,
            description,
            tags,
            category,
        },
    )
}

fn build(catalog: Arc<Catalog>) -> tantivy::Result<Built> {
    let (schema, f) = schema();
    let index = Index::create_in_ram(schema);
    let mut w: tantivy::IndexWriter = index.writer_with_num_threads(1, 15_000_000)?;
    for item in catalog.items() {
        let m = &item.item.metadata;
        w.add_document(doc!(
            f.id => m.id.clone(),
            f.name => m.name.clone(),
            f.description => m.description.clone(),
            f.tags => m.tags.clone().unwrap_or_default().join(" "),
            f.category => m.category.clone(),
        ))?;
    }
    w.commit()?;
    let reader = index.reader()?;
    Ok(Built {
        catalog,
        _index: index,
        reader,
    })
}
