#!/usr/bin/env bash
# Ratio report for the variable-engine benchmarks: reads criterion's results of
# `cargo bench -p pao-benches --bench vars` and prints, per group, PAO's time, the fastest peer
# engine's, the ratios, and whether the performance targets hold.
#
# Usage: benches/report.sh            (median estimates)
#        ESTIMATE=mean benches/report.sh
# Reads $CARGO_TARGET_DIR/criterion when CARGO_TARGET_DIR is set, else <workspace>/target/criterion.
# Exits 1 when a target fails, 2 when there are no results.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target_dir="${CARGO_TARGET_DIR:-$here/../target}"
criterion_dir="$target_dir/criterion"
estimate="${ESTIMATE:-median}"

if [[ ! -d "$criterion_dir" ]]; then
    echo "no criterion results in $criterion_dir; run: cargo bench -p pao-benches --bench vars" >&2
    exit 2
fi

exec python3 - "$criterion_dir" "$estimate" <<'PY'
import json, os, sys

root, estimate = sys.argv[1], sys.argv[2]
GROUPS = ["small", "jira20", "filters3", "loop20", "loop20_rich", "cond_expr", "cond_in_list",
          "cond_arith", "cond_const_fold", "catalog_item",
          "compile_jira20", "error_undefined"]
PEERS = ["minijinja", "tera", "handlebars", "upon", "rhai"]

def load(group, engine):
    path = os.path.join(root, group, engine, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)[estimate]["point_estimate"]
    except (OSError, KeyError, ValueError):
        return None

def ns(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"

results = {g: {e: load(g, e) for e in ["pao", "native", "pao_eq_chain"] + PEERS} for g in GROUPS}
if all(r["pao"] is None for r in results.values()):
    print(f"no results under {root}; run: cargo bench -p pao-benches --bench vars", file=sys.stderr)
    sys.exit(2)

header = ["group", "pao ns", "fastest peer", "peer ns", "pao/peer", "pao/minijinja", "native ns",
          "pao/native"]
rows = []
for g in GROUPS:
    r = results[g]
    peers = [(e, r[e]) for e in PEERS if r[e] is not None]
    best = min(peers, key=lambda p: p[1]) if peers else (None, None)
    ratio = r["pao"] / best[1] if r["pao"] and best[1] else None
    mj = r["pao"] / r["minijinja"] if r["pao"] and r["minijinja"] else None
    nat = r["pao"] / r["native"] if r["pao"] and r["native"] else None
    rows.append([g, ns(r["pao"]), best[0] or "-", ns(best[1]),
                 f"{ratio:.2f}x" if ratio else "-", f"{mj:.2f}x" if mj else "-", ns(r["native"]),
                 f"{nat:.2f}x" if nat else "-"])

widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
def line(cells):
    return "  ".join(str(c).ljust(w) if i == 0 or i == 2 else str(c).rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths)))
print(f"criterion {estimate} estimates from {root}")
print(line(header))
print(line(["-" * w for w in widths]))
for row in rows:
    print(line(row))

def fastest_peer(g):
    vals = [results[g][e] for e in PEERS if results[g][e] is not None]
    return min(vals) if vals else None


targets = []
jp, jf, jm = results["jira20"]["pao"], fastest_peer("jira20"), results["jira20"]["minijinja"]
targets.append(("jira20   pao <= 0.50x fastest peer", jp / jf if jp and jf else None, 0.5, "x"))
targets.append(("jira20   pao <= 0.25x minijinja", jp / jm if jp and jm else None, 0.25, "x"))
targets.append(("small    pao <= 100 ns", results["small"]["pao"], 100, "ns"))
targets.append(("cond_expr pao <= 60 ns", results["cond_expr"]["pao"], 60, "ns"))
ip, ic = results["cond_in_list"]["pao"], results["cond_in_list"]["pao_eq_chain"]
targets.append(("cond_in_list pao <= 1.5x its == chain", ip / ic if ip and ic else None, 1.5, "x"))
targets.append(("loop20   pao <= 600 ns", results["loop20"]["pao"], 600, "ns"))
targets.append(("compile_jira20 pao <= 5 us", results["compile_jira20"]["pao"], 5000, "ns"))

print()
print("targets")
failed = False
for desc, value, limit, unit in targets:
    if value is None:
        verdict, shown = "MISSING", "-"
        failed = True
    else:
        ok = value <= limit
        failed |= not ok
        verdict = "PASS" if ok else "FAIL"
        shown = f"{value:.2f}x" if unit == "x" else f"{value:,.1f} ns"
    print(f"  {verdict:<7} {desc:<36} measured {shown}")
sys.exit(1 if failed else 0)
PY
