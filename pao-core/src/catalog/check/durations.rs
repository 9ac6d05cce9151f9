//! PAO-E021: every duration of an item is one PAO takes. The schema accepts any whole number
//! with a unit; [`DurationText`] parses it when the item is read, and one that does not parse
//! or is longer than [`MAX_DURATION`] is reported here, at its place in the file.

use serde_json::Value;

use super::actions::ActionGraph;
use crate::catalog::diagnostic::codes;
use crate::catalog::load::FileDiags;
use crate::catalog::model::{
    ActionType, Approval, CatalogItem, DurationText, ExecutionDefaults, MAX_DURATION, RetryPolicy,
};

/// Checks the item's durations, and the `poll.interval` and `poll.timeout` of REST actions.
pub(super) fn check(d: &mut FileDiags, item: &CatalogItem, g: &ActionGraph) {
    let sla = item.metadata.sla.as_ref();
    check_one(
        d,
        "/metadata/sla/fulfillment",
        sla.and_then(|s| s.fulfillment.as_ref()),
    );
    let f = &item.fulfillment;
    if let Some(a) = &f.approval {
        check_approval(d, "/fulfillment/approval", a);
    }
    if let Some(x) = &f.defaults {
        check_execution(d, "/fulfillment/defaults", x);
    }
    for a in &g.actions {
        check_one(
            d,
            &format!("{}/timeout", a.pointer),
            a.spec.timeout.as_ref(),
        );
        if let Some(r) = &a.spec.retry {
            check_retry(d, &format!("{}/retry", a.pointer), r);
        }
        if a.spec.action_type == ActionType::Rest {
            check_poll(d, &a.pointer, &a.spec.config);
        }
    }
    let windows = item.lifecycle.as_ref().and_then(|l| l.maintenance.as_ref());
    for (i, w) in windows.into_iter().flatten().enumerate() {
        let ptr = format!("/lifecycle/maintenance/{i}/duration");
        check_one(d, &ptr, Some(&w.duration));
        if let Err(e) = crate::catalog::maintenance::parse_cron(&w.cron) {
            d.error(
                codes::CRON,
                &format!("/lifecycle/maintenance/{i}/cron"),
                format!("`{}` is not a maintenance start PAO takes: {e}", w.cron),
                Some(
                    "write 5 fields in UTC: minute, hour, day of month, month, day of week, e.g. `0 2 * * SUN`"
                        .to_string(),
                ),
            );
        }
    }
    let health = item
        .monitoring
        .as_ref()
        .and_then(|m| m.health_check.as_ref());
    check_one(
        d,
        "/monitoring/health_check/interval",
        health.and_then(|h| h.interval.as_ref()),
    );
}

/// An approval's `timeout` and `escalation.after`.
pub(in crate::catalog) fn check_approval(d: &mut FileDiags, ptr: &str, a: &Approval) {
    check_one(d, &format!("{ptr}/timeout"), a.timeout.as_ref());
    if let Some(e) = &a.escalation {
        check_one(d, &format!("{ptr}/escalation/after"), Some(&e.after));
    }
}

/// Execution defaults: `timeout` and the retry delays.
pub(in crate::catalog) fn check_execution(d: &mut FileDiags, ptr: &str, x: &ExecutionDefaults) {
    check_one(d, &format!("{ptr}/timeout"), x.timeout.as_ref());
    if let Some(r) = &x.retry {
        check_retry(d, &format!("{ptr}/retry"), r);
    }
}

fn check_retry(d: &mut FileDiags, ptr: &str, r: &RetryPolicy) {
    check_one(d, &format!("{ptr}/initial"), r.initial.as_ref());
    check_one(d, &format!("{ptr}/max"), r.max.as_ref());
}

/// A REST action's poll delays, which the action reads from its config.
fn check_poll(d: &mut FileDiags, action_ptr: &str, config: &Value) {
    for key in ["interval", "timeout"] {
        if let Some(Value::String(text)) = config.pointer(&format!("/poll/{key}")) {
            let ptr = format!("{action_ptr}/config/poll/{key}");
            check_one(d, &ptr, Some(&DurationText::new(text.as_str())));
        }
    }
}

fn check_one(d: &mut FileDiags, ptr: &str, duration: Option<&DurationText>) {
    let Some(duration) = duration else { return };
    if duration.get().is_some() {
        return;
    }
    let longest = MAX_DURATION.as_secs() / 86_400;
    d.error(
        codes::DURATION,
        ptr,
        format!("`{duration}` is not a duration PAO takes (at most {longest}d)"),
        Some(format!(
            "write a whole number and a unit (ms, s, m, h or d) of at most {longest} days, e.g. 30s, 10m or 72h"
        )),
    );
}
