//! `cost`: a monthly estimate from the price table of `catalog.yaml` — SKU unit price ×
//! region multiplier × quantity per line, then discounts (named ones from the table, limited to
//! their SKU patterns, or inline ones on every line), then tax. The result carries the
//! breakdown and the monthly total, which approvals and the item's `metadata.cost` read.

use async_trait::async_trait;
use pao_core::action::{Action, ActionContext, ActionDescriptor, ActionError, ActionOutput};
use pao_core::catalog::model::PriceTable;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::PriceBook;

/// The `cost` action.
#[derive(Debug, Clone)]
pub struct CostAction {
    prices: PriceBook,
}

impl CostAction {
    /// Reads prices from `prices` at each execution.
    pub fn new(prices: PriceBook) -> CostAction {
        CostAction { prices }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    items: Vec<Line>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    discounts: Vec<DiscountRef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    sku: String,
    #[serde(default)]
    quantity: Option<Value>,
    #[serde(default)]
    region: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DiscountRef {
    Named(String),
    Inline { id: String, percent: f64 },
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `*` matches any run of characters. Iterative: on a mismatch only the last `*` takes one
/// more character, so the work is at most pattern length × text length, whatever the number
/// of `*` (a recursive match is exponential in it). Bytes compare as well as characters: a
/// literal UTF-8 sequence only matches on character boundaries.
fn glob(pattern: &str, s: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // After the last `*` seen: where the pattern resumes, and where its match ends so far.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if p.get(pi) == Some(&b'*') {
            pi += 1;
            star = Some((pi, ti));
        } else if p.get(pi) == Some(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((resume, end)) = star {
            pi = resume;
            ti = end + 1;
            star = Some((resume, end + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn quantity(v: Option<&Value>, i: usize) -> Result<f64, ActionError> {
    let q = match v {
        None | Some(Value::Null) => 1.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => s.trim().parse::<f64>().map_err(|_| {
            ActionError::permanent(format!("/items/{i}/quantity: `{s}` is not a number"))
        })?,
        Some(other) => {
            return Err(ActionError::permanent(format!(
                "/items/{i}/quantity: expected a number, got {other}"
            )));
        }
    };
    if !q.is_finite() || q < 0.0 {
        return Err(ActionError::permanent(format!(
            "/items/{i}/quantity: {q} is not a non-negative number"
        )));
    }
    Ok(q)
}

/// Computes the estimate of `input` with `table`.
pub fn estimate(table: &PriceTable, input: &Value) -> Result<Value, ActionError> {
    let cfg: Config = serde_json::from_value(input.clone())
        .map_err(|e| ActionError::permanent(format!("cost config: {e}")))?;
    if let Some(c) = &cfg.currency
        && c != &table.currency
    {
        return Err(ActionError::permanent(format!(
            "the estimate is asked in {c} but the price table is in {}; PAO does not convert currencies",
            table.currency
        )));
    }
    let mut lines = Vec::new();
    let mut amounts = Vec::new();
    for (i, l) in cfg.items.iter().enumerate() {
        let Some(p) = table.skus.get(&l.sku) else {
            return Err(ActionError::permanent(format!(
                "/items/{i}/sku: `{}` is not in the price table",
                l.sku
            )));
        };
        let q = quantity(l.quantity.as_ref(), i)?;
        let mult = match (&l.region, &p.region_multipliers) {
            (Some(r), Some(m)) => m.get(r).copied().unwrap_or(1.0),
            _ => 1.0,
        };
        let amount = p.unit_price * mult * q;
        amounts.push(amount);
        lines.push(json!({
            "sku": l.sku, "unit": p.unit, "quantity": q, "unit_price": p.unit_price,
            "region": l.region, "region_multiplier": mult, "amount": round2(amount),
        }));
    }
    let subtotal: f64 = amounts.iter().sum();
    let mut applied = Vec::new();
    for d in &cfg.discounts {
        let (id, percent, skus) = match d {
            DiscountRef::Named(id) => {
                let found = table
                    .discounts
                    .iter()
                    .flatten()
                    .find(|x| &x.id == id)
                    .ok_or_else(|| {
                        ActionError::permanent(format!("discount `{id}` is not in the price table"))
                    })?;
                (id.clone(), found.percent, found.skus.clone())
            }
            DiscountRef::Inline { id, percent } => (id.clone(), *percent, None),
        };
        if !(0.0..=100.0).contains(&percent) {
            return Err(ActionError::permanent(format!(
                "discount `{id}`: {percent}% is not between 0 and 100"
            )));
        }
        let mut off = 0.0;
        for (i, l) in cfg.items.iter().enumerate() {
            let applies = skus
                .as_ref()
                .is_none_or(|pats| pats.iter().any(|p| glob(p, &l.sku)));
            if applies {
                let cut = amounts[i] * percent / 100.0;
                amounts[i] -= cut;
                off += cut;
            }
        }
        applied.push(json!({"id": id, "percent": percent, "amount": round2(off)}));
    }
    let discounted: f64 = amounts.iter().sum();
    let tax_rate = table.tax_rate.unwrap_or(0.0);
    let tax = discounted * tax_rate;
    let monthly = round2(discounted + tax);
    Ok(json!({
        "currency": table.currency,
        "monthly": monthly,
        "one_time": 0,
        "subtotal": round2(subtotal),
        "discount_total": round2(subtotal - discounted),
        "tax_rate": tax_rate,
        "tax": round2(tax),
        "lines": lines,
        "discounts": applied,
    }))
}

#[async_trait]
impl Action for CostAction {
    // A cost estimate has no effect: running it is its own dry run.
    fn supports_dry_run(&self) -> bool {
        true
    }

    fn describe(&self) -> ActionDescriptor {
        ActionDescriptor {
            type_name: "cost".into(),
            config_schema: crate::schema::config_schema("CostConfig"),
            output_schema: json!({
                "type": "object",
                "required": ["currency", "monthly", "lines"],
                "properties": {
                    "currency": {"type": "string"},
                    "monthly": {"type": "number"},
                    "one_time": {"type": "number"},
                    "subtotal": {"type": "number"},
                    "discount_total": {"type": "number"},
                    "tax": {"type": "number"},
                    "lines": {"type": "array"},
                    "discounts": {"type": "array"}
                }
            }),
            supports_rollback: false,
            sample_output: json!({
                "currency": "USD", "monthly": 264.0, "one_time": 0, "subtotal": 300.0,
                "discount_total": 36.0, "tax_rate": 0.0, "tax": 0.0,
                "lines": [{"sku": "db.medium", "unit": "instance-month", "quantity": 1, "unit_price": 240.0,
                           "region": "eu-west-1", "region_multiplier": 1.1, "amount": 264.0}],
                "discounts": [{"id": "enterprise-agreement", "percent": 12.0, "amount": 31.68}]
            }),
        }
    }

    fn target(&self, _input: &Value) -> String {
        "cost".into()
    }

    async fn execute(
        &self,
        _ctx: &ActionContext,
        input: &Value,
    ) -> Result<ActionOutput, ActionError> {
        let table = self.prices.get().ok_or_else(|| {
            ActionError::permanent(
                "no price table: add `prices:` to catalog.yaml (see docs/actions.md)",
            )
        })?;
        Ok(ActionOutput {
            result: estimate(&table, input)?,
            rollback_state: Value::Null,
        })
    }

    async fn rollback(
        &self,
        _ctx: &ActionContext,
        _input: &Value,
        _state: &Value,
    ) -> Result<(), ActionError> {
        // An estimate has no effect to undo.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("vm.*", "vm.small"));
        assert!(glob("*", "x"));
        assert!(!glob("db.*", "vm.small"));
        assert!(glob("a*c", "abbc"));
        assert!(!glob("a*c", "abbcd"));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(glob("**", ""));
        assert!(glob("é*ü", "éaaü"));
        assert!(!glob("a", "ab"));
    }

    #[test]
    fn many_stars_against_a_long_sku_are_fast() {
        let pattern = format!("{}b", "a*".repeat(30));
        let sku = "a".repeat(10_000);
        let started = std::time::Instant::now();
        assert!(!glob(&pattern, &sku));
        assert!(glob(&format!("{}a", "a*".repeat(30)), &sku));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
