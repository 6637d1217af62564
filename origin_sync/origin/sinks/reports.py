"""What an experiment's report is counted from: the SQL over stored events (one text for both engines), and the
attribution of a batch's feedback to impressions."""

from __future__ import annotations

from typing import Any

from origin_sync.wire.events import FEEDBACK_KINDS, KIND_IMPRESSION

# Per impression (unit of analysis): did it lead to a click, a cart, a purchase. Feedback is attributed to the
# impression through its request_id, so the variant is the one the edge served. Grouped by region as well, so that
# revenue in a currency can be set against the impressions of the regions that pay in it.
COUNTS_SQL = """
WITH imp AS (
    SELECT request_id, variant, region FROM events WHERE kind = 'impression' AND experiment = $1
), act AS (
    SELECT request_id,
           MAX(CASE WHEN kind = 'click' OR kind = 'purchase' THEN 1 ELSE 0 END) AS clicked,
           MAX(CASE WHEN kind = 'add_to_cart' THEN 1 ELSE 0 END) AS carted,
           MAX(CASE WHEN kind = 'purchase' THEN 1 ELSE 0 END) AS purchased
    FROM events WHERE kind <> 'impression' AND request_id IN (SELECT request_id FROM imp)
    GROUP BY request_id
)
SELECT imp.variant, imp.region, COUNT(*), COALESCE(SUM(act.clicked), 0), COALESCE(SUM(act.carted), 0),
       COALESCE(SUM(act.purchased), 0)
FROM imp LEFT JOIN act ON act.request_id = imp.request_id
GROUP BY imp.variant, imp.region ORDER BY imp.variant, imp.region
"""
COUNTS_KEYS = ("variant", "region", "impressions", "clicked", "carted", "converted")
# Revenue per currency, never summed across currencies: per impression and currency the value of its purchases,
# then per (variant, region, currency) how many impressions had one, their revenue and its sum of squares.
# A purchase without a currency keeps NULL (the report names it apart).
REVENUE_SQL = """
WITH imp AS (
    SELECT request_id, variant, region FROM events WHERE kind = 'impression' AND experiment = $1
), rev AS (
    SELECT request_id, COALESCE(currency, '') AS currency, COALESCE(SUM(value), 0) AS revenue
    FROM events WHERE kind = 'purchase' AND request_id IN (SELECT request_id FROM imp)
    GROUP BY request_id, COALESCE(currency, '')
)
SELECT imp.variant, imp.region, NULLIF(rev.currency, ''), COUNT(*), SUM(rev.revenue), SUM(rev.revenue * rev.revenue)
FROM imp JOIN rev ON rev.request_id = imp.request_id
GROUP BY imp.variant, imp.region, rev.currency ORDER BY imp.variant, imp.region, rev.currency
"""
REVENUE_KEYS = ("variant", "region", "currency", "purchases", "revenue", "revenue_sq")
_FEEDBACK_SQL = ", ".join(f"'{k}'" for k in FEEDBACK_KINDS)


def unattributed_sql(experiment: dict[str, Any]) -> tuple[str, list[Any]]:
    """Feedback events within an experiment's scope (its regions, every region when it names none, and its time
    window) whose request_id matches no stored impression at all, per kind. Experiments never overlap in region and
    time, so each such event falls in at most one experiment's report."""
    where, args = [f"f.kind IN ({_FEEDBACK_SQL})"], []
    for clause, value in (("f.ts >= ${}", experiment.get("start")), ("f.ts < ${}", experiment.get("end"))):
        if value is not None:
            args.append(float(value))
            where.append(clause.format(len(args)))
    regions = list(experiment.get("regions") or ())
    if regions:
        marks = []
        for region in regions:
            args.append(region)
            marks.append(f"${len(args)}")
        where.append(f"f.region IN ({', '.join(marks)})")
    sql = (
        f"SELECT f.kind, COUNT(*) FROM events f WHERE {' AND '.join(where)} AND NOT EXISTS "  # nosec B608 - constant clauses, values bound
        "(SELECT 1 FROM events i WHERE i.request_id = f.request_id AND i.kind = 'impression') GROUP BY f.kind"
    )
    return sql, args


def unattributed_feedback(events: list[dict[str, Any]], known: set[str]) -> dict[str, int]:
    """Per kind, the feedback events of a batch whose request_id is neither an impression of the batch nor in
    `known` (the request ids of stored impressions)."""
    seen = known | {e["request_id"] for e in events if e["kind"] == KIND_IMPRESSION}
    counts: dict[str, int] = {}
    for event in events:
        if event["kind"] in FEEDBACK_KINDS and event["request_id"] not in seen:
            counts[event["kind"]] = counts.get(event["kind"], 0) + 1
    return counts


def unresolved_request_ids(events: list[dict[str, Any]]) -> list[str]:
    """The request ids of a batch's feedback that the batch's own impressions do not explain."""
    own = {e["request_id"] for e in events if e["kind"] == KIND_IMPRESSION}
    return sorted({e["request_id"] for e in events if e["kind"] in FEEDBACK_KINDS and e["request_id"] not in own})
