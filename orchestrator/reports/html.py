"""One self-contained HTML file per report: inline CSS, plots as base64 PNG, no script, no link.

It opens from a mail attachment or a shared drive with no network: nothing is fetched.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape

from orchestrator.reports import plots
from orchestrator.reports.future_value import FutureValueReport
from orchestrator.reports.personas import PersonaReport
from orchestrator.reports.programme import ProgrammeReport
from orchestrator.reports.render import (
    HTML_COLUMNS,
    interval,
    money,
    p_text,
    pct,
    pick_columns,
)
from orchestrator.reports.uplift import UpliftReport, UpliftRow

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0; color: #222; background: #f6f7f9; }
header { background: #20324a; color: #fff; padding: 20px 32px; }
header h1 { margin: 0 0 4px; font-size: 24px; }
header p { margin: 0; opacity: .85; }
main { padding: 12px 32px 40px; max-width: 1400px; }
section { background: #fff; border-radius: 8px; padding: 16px 20px; margin: 16px 0;
          box-shadow: 0 1px 3px rgba(0,0,0,.08); }
h2 { margin-top: 0; font-size: 19px; color: #20324a; }
.cards { display: flex; gap: 14px; flex-wrap: wrap; background: none; box-shadow: none;
         padding: 0; }
.card { background: #fff; border-radius: 8px; padding: 14px 18px; min-width: 200px; flex: 1;
        box-shadow: 0 1px 3px rgba(0,0,0,.08); }
.card .big { font-size: 24px; font-weight: 600; }
.card .small { color: #666; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; margin-top: 10px; }
th, td { padding: 5px 8px; border-bottom: 1px solid #e3e6ea; text-align: right;
         white-space: nowrap; }
th { background: #eef1f5; position: sticky; top: 0; }
td.l, th.l { text-align: left; }
td.rec { white-space: normal; text-align: left; }
.gain, .highly-effective { color: #17803d; font-weight: 600; }
.somewhat-effective { color: #5a9e2f; font-weight: 600; }
.loss, .harmful { color: #c0262d; font-weight: 600; }
.too-small-to-say, .no-control-group, .no-conversions { color: #a07800; }
img { max-width: 100%; height: auto; display: block; margin: 8px 0; }
.notes { color: #555; font-size: 13px; }
.scroll { overflow-x: auto; }
"""


def img(png: bytes, alt: str) -> str:
    """An embedded PNG (the report stays one self-contained file)."""
    return _img(png, alt)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _cls(text: str) -> str:
    return text.replace(" ", "-")


def _page(title: str, subtitle: str, body: Sequence[str]) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header><main>"
        + "\n".join(body)
        + "</main></body></html>\n"
    )


def _rows_table(rows: Sequence[UpliftRow], by: Sequence[str]) -> str:
    columns = pick_columns(HTML_COLUMNS)  # the terminal's columns, cell for cell
    head = (
        '<th class="l">campaign</th>'
        + "".join(f'<th class="l">{escape(b)}</th>' for b in by)
        + "".join(
            f'<th class="{"l" if c.left else ""}">{escape(c.header.replace(chr(10), " "))}</th>'
            for c in columns
        )
    )
    body = []
    for row in rows:
        tds = (
            f'<td class="l">{escape(row.campaign)}</td>'
            + "".join(f'<td class="l">{escape(v)}</td>' for v in row.segment.values())
            + "".join(
                f'<td class="l {_cls(row.verdict)}">{escape(c.cell(row))}</td>'
                if c.key == "verdict"
                else f'<td class="{"l" if c.left else ""}">{escape(c.cell(row))}</td>'
                for c in columns
            )
        )
        body.append(f"<tr>{tds}</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def _card(title: str, big: str, small: str) -> str:
    return (
        f'<div class="card"><div class="small">{escape(title)}</div>'
        f'<div class="big">{escape(big)}</div><div class="small">{escape(small)}</div></div>'
    )


def persona_section(report: PersonaReport) -> str:
    """The persona tree plot and its leaves with labels and recommendations."""
    what = report.campaign + (f" / {report.treatment}" if report.treatment else "")
    tree = report.tree
    rows = []
    for leaf in tree.leaves:
        rows.append(
            "<tr>"
            f'<td class="l">{escape(leaf.description)}</td>'
            f"<td>{leaf.n_test + leaf.n_control:,}</td>"
            f"<td>{escape(interval(money(leaf.effect, sign=True), leaf.low, leaf.high, money))}"
            "</td>"
            f'<td class="l {_cls(leaf.label)}">{escape(leaf.label)}</td>'
            f'<td class="rec">{escape(leaf.recommendation)}</td>'
            "</tr>"
        )
    note = (
        "<p class='notes'>No split was significant: the effect looks the same for everyone, or "
        "the data is too small to tell groups apart.</p>"
        if len(tree.leaves) == 1
        else ""
    )
    return (
        f"<section><h2>Sub-personas of {escape(what)}</h2>"
        f"<p class='notes'>{report.customers:,} customers; the splits were chosen on "
        f"{tree.n_train:,} of them and every effect below is estimated on the other "
        f"{tree.n_estimate:,} (honest estimates; seed {tree.seed}, criterion "
        f"{escape(tree.criterion)}, at least {tree.min_leaf} test and {tree.min_leaf} control "
        f"customers per group{_leaf_note(tree.min_leaf)}).</p>"
        + _img(plots.persona_plot(report), f"persona tree of {what}")
        + "<div class='scroll'><table><tr><th class='l'>group</th><th>customers</th>"
        "<th>uplift / decision (95% CI)</th><th class='l'>label</th>"
        "<th class='l'>recommendation</th></tr>"
        + "".join(rows)
        + "</table></div>"
        + note
        + "</section>"
    )


METHODS = """
<section><h2>How to read this report</h2><div class="notes">
<p><b>Value</b> is what a customer spent inside a decision's measurement window, minus the
treatment's cost when it was sent. <b>Uplift</b> is the test group's value per decision minus
the control group's; <b>incremental value</b> is that uplift times the test decisions: the money
the campaign made that its customers would not have spent anyway.</p>
<p>Intervals are 95%, with each customer's decisions taken together (customers are what the
control group draws): Welch's t interval for value, Newcombe's score interval for the difference
of conversion rates, Fieller's interval for the relative uplift (unbounded when the control
group's value is too close to zero). When several rows are compared, p-values are
adjusted with Benjamini-Hochberg (q); a row is called a gain or a loss when q ≤ 0.05.</p>
<p>A row with fewer than 30 customers in an arm, no control group, or no conversion at all is
shown with its counts but without interval or verdict: there is not enough to say anything.</p>
<p>A treatment is compared with the control customers for whom that same treatment had been
picked, so the comparison is not confused by who the policy picks it for.</p>
<p>Sub-personas come from an honest uplift tree: the groups are chosen on one random half of
the customers and their effects measured on the other half. A group is <i>highly
effective</i> when its interval is above zero and its uplift at least the campaign's average,
<i>somewhat effective</i> when above zero but below average, <i>not effective</i> when its
interval includes zero, <i>harmful</i> when its interval is below zero.</p>
</div></section>
"""


def uplift_html(
    report: UpliftReport,
    *,
    programme: ProgrammeReport | None = None,
    personas: PersonaReport | None = None,
    programme_note: str | None = None,
    extra: Sequence[str] = (),
    customers: FutureValueReport | None = None,
) -> str:
    """The whole uplift report as one HTML page (plots need ``uplift_report(detail=True)``);
    ``extra`` sections (HTML) go right after the headline cards."""
    what = f"campaign {report.campaign}" if report.campaign else "all campaigns"
    if report.treatment:
        what += f", treatment {report.treatment}"
    subtitle = (
        f"{what} · decisions {report.since} to {report.until} · measured as of {report.as_of}"
        + (f" · amounts in {report.currency}" if report.currency else "")
    )
    body = []
    cards = [
        _card("decisions measured", f"{report.decisions:,}", f"{report.customers:,} customers"),
    ]
    if report.timeline is not None and len(report.timeline.days):
        tl = report.timeline
        cards.append(
            _card(
                "incremental value, all campaigns",
                money(float(tl.total[-1]), sign=True),
                f"95% band {money(float(tl.total_low[-1]), sign=True)} to "
                f"{money(float(tl.total_high[-1]), sign=True)}",
            )
        )
    if programme is not None:
        cards.append(
            _card(
                "programme vs global control",
                f"{money(programme.uplift, sign=True)} / customer",
                interval("95% CI", programme.uplift_low, programme.uplift_high, money)
                + f" · {money(programme.incremental, sign=True)} in total · everyone against "
                "the never-contacted over the whole period; the campaigns' figure counts each "
                "send's window against its own control group, so the two can differ",
            )
        )
    elif programme_note:
        cards.append(_card("programme vs global control", "n/a", programme_note))
    if report.still_open:
        cards.append(
            _card("still open", f"{report.still_open:,}", f"decisions, until {report.open_until}")
        )
    body.append(f'<section class="cards">{"".join(cards)}</section>')
    body.extend(extra)
    campaign_rows = report.campaign_rows or report.rows
    body.append(
        "<section><h2>Uplift per campaign</h2>"
        + _img(plots.uplift_plot(campaign_rows), "uplift per campaign")
        + _rows_table(campaign_rows, [])
        + "</section>"
    )
    if report.by:
        body.append(
            f"<section><h2>By {escape(', '.join(report.by))}</h2>"
            + _rows_table(report.rows, report.by)
            + "</section>"
        )
    if report.heatmap_rows:
        body.append(
            f"<section><h2>Segments × campaigns ({escape(' × '.join(report.heatmap_by))})</h2>"
            + _img(plots.heatmap_plot(report.heatmap_rows, report.heatmap_by), "heat map")
            + "</section>"
        )
    else:
        body.append(
            "<section><h2>Segments × campaigns</h2><p class='notes'>No segment data: give "
            "<code>--by</code> or run the segmentation refresh.</p></section>"
        )
    if report.timeline is not None and len(report.timeline.days) > 1:
        body.append(
            "<section><h2>Over time</h2>"
            + _img(plots.timeline_plot(report.timeline), "cumulative incremental value")
            + "</section>"
        )
    if programme is not None:
        body.append(_programme_section(programme))
    if personas is not None:
        body.append(persona_section(personas))
    if customers is not None and customers.rows:
        body.append(customers_section(customers))
    if report.notes:
        items = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
        body.append(f"<section><h2>Notes</h2><ul class='notes'>{items}</ul></section>")
    body.append(METHODS)
    return _page("Uplift report", subtitle, body)


def _leaf_note(min_leaf: int) -> str:
    if min_leaf >= 100:
        return ""
    return (
        f"; {min_leaf}, not the 100 of `orch report personas`, so that a small campaign can "
        "split: 5% of its control customers, at least 30"
    )


def _value_interval(mean: float, low: float, high: float) -> str:
    return interval(money(mean), low, high, money)


def customers_section(report: FutureValueReport) -> str:
    """Future value by layer (plot and table) and the honest tree's groups."""
    horizon = f" over {report.horizon_days} days" if report.horizon_days else ""
    head = "".join(f"<th class='l'>{escape(b)}</th>" for b in report.by)
    rows = "".join(
        "<tr>"
        + "".join(f"<td class='l'>{escape(r.labels[b])}</td>" for b in report.by)
        + f"<td class='num'>{r.customers:,}</td><td class='num'>{r.share:.1%}</td>"
        + f"<td class='num'>{escape(interval(money(r.mean), r.ci_low, r.ci_high, money))}</td>"
        + f"<td class='num'>{escape(money(r.total))}</td></tr>"
        for r in report.rows
    )
    table = (
        f"<table><thead><tr>{head}<th>customers</th><th>share</th>"
        f"<th>future value each (95% CI)</th><th>total</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    tree = ""
    if report.tree:
        leaves = "".join(
            f"<tr><td class='l'>{escape(leaf.rule)}</td><td class='num'>{leaf.customers:,}</td>"
            f"<td class='num'>{escape(_value_interval(leaf.mean, leaf.ci_low, leaf.ci_high))}"
            "</td></tr>"
            for leaf in report.tree
        )
        tree = (
            "<h3>What separates high from low future value</h3><p class='notes'>Groups found "
            "on one random half of the customers, valued on the other.</p>"
            "<table><thead><tr><th class='l'>group</th><th>customers</th>"
            "<th>future value each (95% CI)"
            f"</th></tr></thead><tbody>{leaves}</tbody></table>"
        )
    return (
        f"<section><h2>Customers: predicted future value{escape(horizon)}</h2>"
        + _img(plots.value_plot(report), "future value by layer")
        + table
        + tree
        + "</section>"
    )


def _programme_section(p: ProgrammeReport) -> str:
    rows = [
        ("customers", f"{p.n_control:,}", f"{p.n_rest:,}", ""),
        (
            "value per customer",
            money(p.value_control),
            money(p.value_rest),
            interval(money(p.uplift, sign=True), p.uplift_low, p.uplift_high, money),
        ),
        (
            "bought something",
            pct(p.conversion_control),
            pct(p.conversion_rest),
            interval(pct(p.conversion_diff, sign=True), p.conversion_low, p.conversion_high, pct),
        ),
        (
            "incremental value",
            "",
            "",
            interval(money(p.incremental, sign=True), p.incremental_low, p.incremental_high, money),
        ),
    ]
    trs = "".join(
        f'<tr><td class="l">{escape(a)}</td><td>{escape(b)}</td><td>{escape(c)}</td>'
        f"<td>{escape(d)}</td></tr>"
        for a, b, c, d in rows
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in p.notes)
    return (
        f"<section><h2>The programme against the global control group</h2>"
        f"<p class='notes'>{p.since} to {p.until}: {p.fraction:.0%} of customers are never "
        f"contacted; everyone else's value is their revenue minus send costs (p-value "
        f"{p_text(p.p_value)}).</p>"
        "<table><tr><th class='l'></th><th>global control</th><th>everyone else</th>"
        f"<th>uplift (95% CI)</th></tr>{trs}</table>"
        + (f"<ul class='notes'>{notes}</ul>" if notes else "")
        + "</section>"
    )


def persona_html(report: PersonaReport) -> str:
    what = report.campaign + (f" / {report.treatment}" if report.treatment else "")
    subtitle = f"decisions {report.since} to {report.until} · measured as of {report.as_of}"
    overall = report.tree.overall
    card = _card(
        "campaign average (estimation half)",
        f"{money(float(overall.estimate[0]), sign=True)} / customer",
        interval("95% CI", float(overall.low[0]), float(overall.high[0]), money),
    )
    return _page(
        f"Sub-personas of {what}",
        subtitle,
        [f'<section class="cards">{card}</section>', persona_section(report), METHODS],
    )
