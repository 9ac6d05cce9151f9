//! Maintenance windows of an item (`lifecycle.maintenance`): a 5-field cron expression (UTC)
//! for each start and a length. Requesters see the next window and whether one is in
//! progress on the item and its form; a request submitted during one is told so.

use chrono::{DateTime, Duration, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::Serialize;

use super::model::CatalogItem;

/// Parses a 5-field cron expression (minute, hour, day of month, month, day of week; UTC)
/// that has a next start.
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| e.to_string())?;
    let from = DateTime::<Utc>::UNIX_EPOCH;
    cron.find_next_occurrence(&from, false)
        .map_err(|_| "the expression never matches a date".to_string())?;
    Ok(cron)
}

/// A maintenance window as requesters see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowStatus {
    /// When it starts, as written.
    pub cron: String,
    /// Its length, as written.
    pub duration: String,
    /// Whether a window is in progress now.
    pub in_progress: bool,
    /// When the window in progress ends.
    pub ends_at: Option<DateTime<Utc>>,
    /// The next start after now.
    pub next_start: Option<DateTime<Utc>>,
    /// The end of that next window.
    pub next_end: Option<DateTime<Utc>>,
}

/// The item's maintenance windows at `now`. A window whose cron or length does not parse
/// (the catalog check reports it) is left out.
pub fn windows(item: &CatalogItem, now: DateTime<Utc>) -> Vec<WindowStatus> {
    let list = item.lifecycle.as_ref().and_then(|l| l.maintenance.as_ref());
    list.into_iter()
        .flatten()
        .filter_map(|w| {
            let cron = parse_cron(&w.cron).ok()?;
            let length = Duration::from_std(w.duration.get()?).ok()?;
            let current = cron
                .find_previous_occurrence(&now, true)
                .ok()
                .map(|start| start + length)
                .filter(|end| *end > now);
            let next_start = cron.find_next_occurrence(&now, false).ok();
            Some(WindowStatus {
                cron: w.cron.clone(),
                duration: w.duration.to_string(),
                in_progress: current.is_some(),
                ends_at: current,
                next_start,
                next_end: next_start.map(|s| s + length),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn item(cron: &str, duration: &str) -> CatalogItem {
        let yaml = format!(
            "apiVersion: pao.dev/v2\nkind: CatalogItem\nmetadata: {{ id: a.b, name: A, description: d, version: 1.0.0, category: c, owner: {{ team: t }} }}\n\
             presentation: {{ groups: [] }}\nfulfillment: {{ mode: automated, actions: [] }}\n\
             lifecycle: {{ maintenance: [{{ cron: \"{cron}\", duration: {duration} }}] }}\n"
        );
        serde_yaml_like(&yaml)
    }

    fn serde_yaml_like(yaml: &str) -> CatalogItem {
        let doc = crate::catalog::yaml::parse(yaml).expect("yaml");
        serde_json::from_value(doc.value).expect("item")
    }

    #[test]
    fn five_fields_only_and_a_date_that_exists() {
        assert!(parse_cron("0 2 * * SUN").is_ok());
        assert!(parse_cron("30 3 * * TUE").is_ok());
        assert!(parse_cron("0 0 2 * * SUN").is_err(), "seconds");
        assert!(parse_cron("0 2 * *").is_err());
        assert!(parse_cron("61 2 * * *").is_err());
        assert!(parse_cron("0 0 31 2 *").is_err(), "the 31st of February");
        assert!(parse_cron("whenever").is_err());
    }

    #[test]
    fn the_window_in_progress_and_the_next() {
        let i = item("0 2 * * SUN", "2h");
        // Sunday 2026-06-14, 03:00: inside the 02:00-04:00 window.
        let now = Utc.with_ymd_and_hms(2026, 6, 14, 3, 0, 0).unwrap();
        let w = &windows(&i, now)[0];
        assert!(w.in_progress);
        assert_eq!(
            w.ends_at,
            Some(Utc.with_ymd_and_hms(2026, 6, 14, 4, 0, 0).unwrap())
        );
        assert_eq!(
            w.next_start,
            Some(Utc.with_ymd_and_hms(2026, 6, 21, 2, 0, 0).unwrap())
        );
        assert_eq!(
            w.next_end,
            Some(Utc.with_ymd_and_hms(2026, 6, 21, 4, 0, 0).unwrap())
        );
        // At its end it is over.
        let w = &windows(&i, Utc.with_ymd_and_hms(2026, 6, 14, 4, 0, 0).unwrap())[0];
        assert!(!w.in_progress);
        // At its start it is on.
        let w = &windows(&i, Utc.with_ymd_and_hms(2026, 6, 14, 2, 0, 0).unwrap())[0];
        assert!(w.in_progress);
    }
}
