"""Server-rendered HTML of a catalog snapshot: no templates engine, no CDN, inline CSS/JS/SVG only.

The same renderer serves the web app (links like /views/x) and writes the static export of the
`catalog` Dagster asset (flat files like view-x.html), through a `Links` object.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote


class Links:
    """URLs of the web app."""

    static = False

    def index(self) -> str:
        return "/"

    def view(self, name: str) -> str:
        return f"/views/{quote(name)}"

    def feature(self, view: str, name: str) -> str:
        return f"/features/{quote(view)}/{quote(name)}"

    def service(self, name: str) -> str:
        return f"/services/{quote(name)}"

    def model(self, name: str) -> str:
        return f"/models/{quote(name)}"

    def lineage(self) -> str:
        return "/lineage"

    def api(self, path: str) -> str | None:
        return f"/api/{path}"


class StaticLinks(Links):
    """File names of the static export (one flat folder, relative links)."""

    static = True

    def index(self) -> str:
        return "index.html"

    def view(self, name: str) -> str:
        return f"view-{quote(name)}.html"

    def feature(self, view: str, name: str) -> str:
        return f"feature-{quote(view)}.{quote(name)}.html"

    def service(self, name: str) -> str:
        return f"service-{quote(name)}.html"

    def model(self, name: str) -> str:
        return f"model-{quote(name)}.html"

    def lineage(self) -> str:
        return "lineage.html"

    def api(self, path: str) -> str | None:
        return None


CSS = """
*{box-sizing:border-box}body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2433;background:#f6f7f9}
header{background:#1d2433;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center}
header a{color:#cfd8ea;text-decoration:none}header a:hover{color:#fff}header .brand{font-weight:700;color:#fff}
main{padding:16px 24px;max-width:1280px}h1{font-size:22px;margin:8px 0}h2{font-size:17px;margin:22px 0 8px}
a{color:#1f5fbf}table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e8}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e7eaf0;vertical-align:top}th{background:#eef1f6;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#6b7385}.small{font-size:12px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;white-space:nowrap}
.fresh,.passing{background:#d8f3df;color:#17602c}.stale,.failing{background:#fbdcdc;color:#8a1c1c}
.warning{background:#fdefc8;color:#7a5300}.unknown,.none,.n\\/a{background:#e6e8ed;color:#4a5163}
.tag{display:inline-block;background:#e9eefb;color:#24427a;border-radius:4px;padding:0 6px;margin:1px 2px;font-size:12px}
.card{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:12px 16px;margin:10px 0}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:10px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0}dt{color:#6b7385}dd{margin:0}
#search{width:100%;max-width:560px;padding:8px 10px;font-size:15px;border:1px solid #b9c1cf;border-radius:6px}
code{background:#eef1f6;padding:0 4px;border-radius:3px}svg text{font:11px system-ui,sans-serif}
.bar{fill:#4a7fd4}.bar:hover{fill:#1f5fbf}.bar.tail{fill:#b38b2e}.bar.baseline{fill:#9aa3b5}.bar.drifted{fill:#d0612b}.lnode rect{fill:#fff;stroke:#8792a8}.lnode.focus rect{stroke:#1f5fbf;stroke-width:2.5;fill:#eaf1fd}
.lnode.dim{opacity:.35}.ledge{fill:none;stroke:#9aa4b8;stroke-width:1.3}.ledge.dim{opacity:.2}
.error{background:#fbdcdc;color:#8a1c1c;padding:6px 10px;border-radius:4px}
table.inner{width:auto;margin:2px 0;border-color:#e7eaf0}table.inner th,table.inner td{padding:2px 6px;font-size:12px;overflow-wrap:anywhere}
table.checks{table-layout:fixed}table.checks th:last-child{width:46%}table.checks td{overflow-wrap:anywhere}td.why{white-space:nowrap}
table.meta{width:100%}table.meta>tbody>tr>th{background:#f6f7f9;font-weight:500;color:#4a5163;width:30%}summary{cursor:pointer;color:#4a5163}
"""

# Ranks the features table with catalog.search's weights (FIELD_WEIGHTS, inlined as JSON) over each
# row's data-fields (catalog.search.search_fields), shows why each row matched, and filters the view
# and service tables by their data-search text.
SEARCH_JS = """
(function(){
  var box=document.getElementById('search'); if(!box) return;
  var weights=JSON.parse(document.getElementById('search-weights').textContent);
  var body=document.querySelector('#features tbody'), rows=[].slice.call(body.querySelectorAll('tr'));
  var others=[].slice.call(document.querySelectorAll('#views tbody tr, #services tbody tr'));
  var count=document.getElementById('match-count');
  function rank(row, words){
    var fields=JSON.parse(row.getAttribute('data-fields')), score=0, why=[];
    for(var i=0;i<words.length;i++){
      var w=words[i], hit=null;
      for(var j=0;j<weights.fields.length && !hit;j++){ if(fields[weights.fields[j][0]].indexOf(w)>=0) hit=weights.fields[j]; }
      if(!hit) return null;
      score+=hit[2]+(hit[0]==='name' && w===fields.name ? weights.exact_name_bonus : 0);
      var tag=hit[0]==='tags' ? ' in '+fields.tags.split(' ').filter(function(t){return t.indexOf(w)>=0})[0] : '';
      why.push(hit[1]+': "'+w+'"'+tag);
    }
    return {score:score, why:why};
  }
  function apply(){
    var words=box.value.toLowerCase().split(/\\s+/).filter(Boolean), shown=[];
    rows.forEach(function(r){
      var m=words.length ? rank(r, words) : {score:0, why:[]};
      r.style.display=m?'':'none'; r.querySelector('.why').textContent=m ? m.why.join('; ') : '';
      if(m) shown.push([m.score, r.getAttribute('data-feature'), r]);
    });
    if(words.length) shown.sort(function(a,b){return b[0]-a[0] || (a[1]<b[1]?-1:a[1]>b[1]?1:0)});
    else shown=rows.map(function(r){return [0, '', r]});
    shown.forEach(function(s){body.appendChild(s[2])});
    document.querySelectorAll('.why-col').forEach(function(c){c.style.display=words.length?'':'none'});
    var views=0, services=0;
    others.forEach(function(r){var t=r.getAttribute('data-search'); var ok=words.every(function(w){return t.indexOf(w)>=0});
      r.style.display=ok?'':'none'; if(ok){ if(r.closest('#views')) views++; else services++; }});
    if(count) count.textContent=shown.length+' of '+rows.length+' features'+(words.length?', '+views+' views, '+services+' services match':'');
    if(history.replaceState && location.protocol!=='file:'){var u=new URL(location.href); if(box.value) u.searchParams.set('q',box.value); else u.searchParams.delete('q'); history.replaceState(null,'',u);}
  }
  box.addEventListener('input',apply);
  var q=new URLSearchParams(location.search).get('q'); if(q && !box.value) box.value=q;
  apply();
})();
"""


def e(value: Any) -> str:
    return escape("" if value is None else str(value))


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e12:
            return f"{int(value):,}"
        if abs(value) >= 1e6 or abs(value) < 1e-3:
            return f"{value:.4g}"
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4g}"
    return str(value)


def pct(rate: float | None) -> str:
    return "–" if rate is None else f"{fmt(round(rate * 100, 2))} %"


def duration(seconds: int | None) -> str:
    if not seconds:
        return "none"
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def badge(status: str, kind: str, title: str = "") -> str:
    label = {"none": "no checks", "n/a": "offline only"}.get(status, status)
    return (f'<span class="badge {e(status)}" data-badge="{e(kind)}" title="{e(title)}">'
            f'{e(kind)}: {e(label)}</span>')


def tags(mapping: dict[str, str]) -> str:
    return " ".join(f'<span class="tag">{e(k)}={e(v)}</span>' for k, v in sorted(mapping.items()))


def page(title: str, body: str, links: Links, snapshot: dict[str, Any]) -> str:
    api = links.api("features")
    errors = "".join(f'<p class="error">{e(err)}</p>' for err in snapshot.get("errors", []))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{e(title)} · featurestack catalog</title><style>{CSS}</style></head>
<body><header><a class="brand" href="{links.index()}">featurestack catalog</a><a href="{links.index()}">Features</a>
<a href="{links.index()}#views">Feature views</a><a href="{links.index()}#services">Feature services</a>
<a href="{links.lineage()}">Lineage</a>{f'<a href="{api}">JSON API</a>' if api else ''}
<span class="muted small" style="margin-left:auto">project {e(snapshot['project'])} · snapshot {e(snapshot['generated_at'][:19])} UTC</span></header>
<main>{errors}{body}</main><script>{SEARCH_JS}</script></body></html>"""


# ---------------------------------------------------------------- SVG

def histogram_svg(histogram: dict[str, Any] | None, *, width: int = 560, height: int = 180, mini: bool = False) -> str:
    if not histogram or not histogram.get("counts"):
        return '<span class="muted">no values</span>'
    counts = list(histogram["counts"])
    above = histogram.get("above") or 0
    if above:
        counts.append(above)
    pad_l, pad_b, pad_t = (0, 0, 0) if mini else (48, 34, 8)
    plot_w, plot_h = width - pad_l - 4, height - pad_b - pad_t
    top = max(counts) or 1
    bar_w = plot_w / len(counts)
    if histogram["kind"] == "numeric":
        edges = histogram["edges"]
        labels = [f"[{fmt(edges[i])}, {fmt(edges[i + 1])})" for i in range(len(histogram["counts"]))]
        if above:
            labels.append(f"≥ {fmt(edges[-1])} (tail above p99)")
    else:
        labels = histogram["labels"]
    parts = []
    for i, count in enumerate(counts):
        h = plot_h * count / top
        tail = " tail" if above and i == len(counts) - 1 else ""
        parts.append(f'<rect class="bar{tail}" x="{pad_l + i * bar_w + 0.5:.1f}" y="{pad_t + plot_h - h:.1f}" '
                     f'width="{max(bar_w - 1, 0.5):.1f}" height="{h:.1f}"><title>{e(labels[i])}: {count:,}</title></rect>')
    if not mini:
        parts.append(f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 4}" y2="{pad_t + plot_h}" stroke="#8792a8"/>')
        parts.append(f'<text x="{pad_l - 4}" y="{pad_t + 10}" text-anchor="end">{fmt(top)}</text>')
        parts.append(f'<text x="{pad_l - 4}" y="{pad_t + plot_h}" text-anchor="end">0</text>')
        if histogram["kind"] == "numeric":
            edges = histogram["edges"]
            parts.append(f'<text x="{pad_l}" y="{height - 18}">{e(fmt(edges[0]))}</text>')
            end_label = f"{fmt(edges[-1])} | tail ≥" if above else fmt(edges[-1])
            parts.append(f'<text x="{width - 4 - (bar_w if above else 0):.0f}" y="{height - 18}" text-anchor="end">{e(end_label)}</text>')
        else:
            for i, label in enumerate(labels):
                parts.append(f'<text x="{pad_l + (i + 0.5) * bar_w:.1f}" y="{height - 18}" text-anchor="middle">{e(label[:10])}</text>')
        axis = "value (log-spaced bins)" if histogram.get("scale") == "log" else "value"
        parts.append(f'<text x="{pad_l + plot_w / 2:.0f}" y="{height - 3}" text-anchor="middle" class="muted">{axis} · bar height = rows</text>')
    element_id = "" if mini else ' id="histogram"'
    return (f'<svg{element_id} class="histogram" role="img" aria-label="histogram" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>')


def drift_svg(drift: dict[str, Any], *, width: int = 560, height: int = 170) -> str:
    """Baseline (training) share vs the day's share per baseline bin, side by side; the last bin is missing values."""
    baseline, day = drift["baseline_fractions"], drift["fractions"]
    edges = drift["edges"]
    labels = ([f"≤ {fmt(edges[0])}"] if edges else ["all values"]) + [f"({fmt(edges[i])}, {fmt(edges[i + 1])}]" for i in range(len(edges) - 1)]
    labels += ([f"> {fmt(edges[-1])}"] if edges else []) + ["missing"]
    pad_l, pad_b, pad_t = 40, 30, 8
    plot_w, plot_h = width - pad_l - 4, height - pad_b - pad_t
    top = max([*baseline, *day, 1e-9])
    group_w = plot_w / len(baseline)
    day_class = "drifted" if drift["breached"] else "bar"
    parts = []
    for i, (expected, actual) in enumerate(zip(baseline, day)):
        for j, (share, css, who) in enumerate(((expected, "baseline", "reference"), (actual, day_class, drift["day"]))):
            h = plot_h * share / top
            parts.append(f'<rect class="bar {css}" x="{pad_l + i * group_w + j * group_w / 2 + 0.5:.1f}" y="{pad_t + plot_h - h:.1f}" '
                         f'width="{max(group_w / 2 - 1, 0.5):.1f}" height="{h:.1f}"><title>{e(labels[i])}: {who} {share:.1%}</title></rect>')
    parts.append(f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 4}" y2="{pad_t + plot_h}" stroke="#8792a8"/>')
    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + 10}" text-anchor="end">{top:.0%}</text>')
    parts.append(f'<text x="{pad_l + plot_w / 2:.0f}" y="{height - 14}" text-anchor="middle" class="muted">'
                 f'bins: deciles of the reference window (the model\'s holdout), last: missing · grey reference, colour {e(drift["day"])}</text>')
    return (f'<svg class="drift-plot" data-source="{e(drift["source"])}" role="img" aria-label="drift plot" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>')


def drift_section(feature: dict[str, Any]) -> str:
    """The feature's latest drift results (per feature service and source): a badge, PSI and KS against
    their thresholds, and the plot."""
    drifts = feature.get("drift") or []
    if not drifts:
        return f'<h2>Drift {badge("unknown", "drift", "no drift report yet (monitoring/<service>/feature_drift)")}</h2>'
    status = "failing" if any(d["breached"] for d in drifts) else "passing"
    rows = "".join(
        f'<div class="card" data-drift-source="{e(d["source"])}"><p><b>{e(d["source"])}</b> values of {e(d["day"])} '
        f'({fmt(d["rows"])} rows), {e(d["feature_service"])} model {e(d["model_version"])}: '
        f'{badge("failing" if d["breached"] else "passing", "drift", "")} PSI <span class="psi">{d["psi"]:.3f}</span> '
        f'(threshold {d["psi_threshold"]:g}) · KS <span class="ks">{d["ks"]:.3f}</span> (threshold {d["ks_threshold"]:g})</p>'
        f'{drift_svg(d)}</div>'
        for d in drifts)
    return f'<h2 id="drift">Drift {badge(status, "drift", "latest PSI / KS against the training baseline")}</h2>{rows}'


KIND_LABEL = {"raw": "raw table", "pipeline": "pipeline", "feature_view": "feature view", "feature_service": "feature service", "model": "model"}
KIND_ORDER = ["raw", "pipeline", "feature_view", "feature_service", "model"]


def _connected(lineage: dict[str, Any], focus: str) -> set[str]:
    """The focus node, everything upstream of it and everything downstream of it."""
    keep = {focus}
    for direction in (("source", "target"), ("target", "source")):
        frontier = [focus]
        while frontier:
            current = frontier.pop()
            for edge in lineage["edges"]:
                if edge[direction[1]] == current and edge[direction[0]] not in keep:
                    keep.add(edge[direction[0]])
                    frontier.append(edge[direction[0]])
    return keep


def lineage_svg(lineage: dict[str, Any], links: Links, focus: str | None = None, only_connected: bool = False) -> str:
    nodes = lineage["nodes"]
    connected = _connected(lineage, focus) if focus else {n["id"] for n in nodes}
    if only_connected:
        nodes = [n for n in nodes if n["id"] in connected]
    if not nodes:
        return '<span class="muted">no lineage</span>'
    columns = [[n for n in nodes if n["kind"] == kind] for kind in KIND_ORDER]
    columns = [c for c in columns if c]
    box_w, box_h, gap_x, gap_y, top = 170, 34, 60, 14, 24
    width = len(columns) * box_w + (len(columns) - 1) * gap_x + 8
    height = top + max(len(c) for c in columns) * (box_h + gap_y) + 4
    pos: dict[str, tuple[float, float]] = {}
    parts = []
    for ci, column in enumerate(columns):
        x = 4 + ci * (box_w + gap_x)
        parts.append(f'<text x="{x}" y="14" class="muted">{e(KIND_LABEL[column[0]["kind"]])}s</text>')
        for ri, n in enumerate(column):
            pos[n["id"]] = (x, top + ri * (box_h + gap_y))
    for edge in lineage["edges"]:
        if edge["source"] not in pos or edge["target"] not in pos:
            continue
        (x1, y1), (x2, y2) = pos[edge["source"]], pos[edge["target"]]
        x1, y1, y2 = x1 + box_w, y1 + box_h / 2, y2 + box_h / 2
        mid = (x1 + x2) / 2
        dim = "" if edge["source"] in connected and edge["target"] in connected else " dim"
        parts.append(f'<path class="ledge{dim}" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" marker-end="url(#arrow)"/>')
    for n in nodes:
        x, y = pos[n["id"]]
        cls = "lnode" + (" focus" if n["id"] == focus else "") + ("" if n["id"] in connected else " dim")
        href = {"feature_view": links.view, "feature_service": links.service, "model": links.model}.get(n["kind"])
        label = e(n["name"] if len(n["name"]) <= 24 else n["name"][:22] + "…")
        inner = (f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="5"/>'
                 f'<text x="{x + 8}" y="{y + 21}">{label}</text><title>{e(KIND_LABEL[n["kind"]])} {e(n["name"])}</title>')
        inner = f'<a href="{href(n["name"])}">{inner}</a>' if href else inner
        parts.append(f'<g class="{cls}" data-node="{e(n["id"])}">{inner}</g>')
    return (f'<svg class="lineage" width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto">'
            '<path d="M0,0 L10,5 L0,10 z" fill="#9aa4b8"/></marker></defs>' + "".join(parts) + "</svg>")


# ---------------------------------------------------------------- pages

def _views_by_name(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {view["name"]: view for view in snapshot["feature_views"]}


def _feature_badges(view: dict[str, Any]) -> str:
    f, v = view["freshness"], view["validation"]
    title = "; ".join(x for x in (f["offline"].get("reason"), (f["online"] or {}).get("reason")) if x)
    return badge(f["status"], "freshness", title) + " " + badge(v["status"], "validation", v["summary"])


def _search_weights_script() -> str:
    from catalog.search import _EXACT_NAME_BONUS, FIELD_WEIGHTS

    weights = json.dumps({"fields": FIELD_WEIGHTS, "exact_name_bonus": _EXACT_NAME_BONUS})
    return f'<script type="application/json" id="search-weights">{weights}</script>'


def render_index(snapshot: dict[str, Any], links: Links) -> str:
    from catalog.search import search_fields, service_search_text, view_search_text

    views = _views_by_name(snapshot)
    rows = []
    for feature in snapshot["features"]:
        view = views[feature["view"]]
        stats = feature.get("stats") or {}
        rows.append(
            f'<tr data-fields="{e(json.dumps(search_fields(feature)))}" data-feature="{e(feature["id"])}">'
            f'<td><a href="{links.feature(feature["view"], feature["name"])}">{e(feature["name"])}</a></td>'
            f'<td class="why why-col small muted"></td>'
            f'<td><a href="{links.view(feature["view"])}">{e(feature["view"])}</a></td><td>{e(feature["dtype"])}</td>'
            f'<td>{e(feature["description"])}</td><td>{e(feature["owner"])}</td><td>{e(", ".join(feature["entities"]))}</td>'
            f'<td>{_feature_badges(view)}</td>'
            f'<td class="num">{pct(stats.get("null_rate"))}</td>'
            f'<td>{histogram_svg(stats.get("histogram"), width=90, height=22, mini=True) if stats.get("histogram") else ""}</td></tr>'
        )
    view_rows = "".join(
        f'<tr data-search="{e(view_search_text(v))}"><td><a href="{links.view(v["name"])}">{e(v["name"])}</a></td><td>{e(", ".join(v["entities"]))}</td>'
        f'<td class="num">{len(v["features"])}</td><td>{e(v["owner"])}</td><td>{_feature_badges(v)}</td>'
        f'<td class="num">{fmt(v["offline"]["rows"])}</td><td>{tags(v["tags"])}</td><td>{e(v["description"])}</td></tr>'
        for v in snapshot["feature_views"]
    )
    service_rows = "".join(
        f'<tr data-search="{e(service_search_text(s))}"><td><a href="{links.service(s["name"])}">{e(s["name"])}</a></td><td>{e(", ".join(s["feature_views"]))}</td>'
        f'<td class="num">{len(s["features"])}</td><td>{e(s["owner"])}</td><td>{e(", ".join(s["models"])) or "–"}</td>'
        f'<td>{e(s["description"])}</td></tr>'
        for s in snapshot["feature_services"]
    )
    models = "".join(
        f'<li><a href="{links.model(m["name"])}"><b>{e(m["name"])}</b></a> {_aliases_text(m)} uses '
        f'{e(m.get("feature_service") or "its own feature list")} '
        f'({len(m.get("uses", []))} features){" · " + e(m["error"]) if m.get("error") else ""}</li>'
        for m in snapshot["models"]
    ) or '<li class="muted">no registered models yet (featurestack train)</li>'
    body = f"""<h1>Features</h1>
<p><input id="search" type="search" autofocus placeholder="Search by name, description, view, tag, owner, entity…" aria-label="search features">
<span id="match-count" class="muted small"></span></p>{_search_weights_script()}
<p class="muted small">Ranked: feature name, then description, then view, then tags; “matched” says where each word was found.</p>
<table id="features"><thead><tr><th>feature</th><th class="why-col">matched</th><th>view</th><th>type</th><th>description</th><th>owner</th><th>entities</th>
<th>status</th><th class="num">nulls</th><th>distribution</th></tr></thead><tbody>{''.join(rows)}</tbody></table>
<h2>Feature views</h2><table id="views"><thead><tr><th>view</th><th>entities</th><th class="num">features</th><th>owner</th>
<th>status</th><th class="num">offline rows</th><th>tags</th><th>description</th></tr></thead><tbody>{view_rows}</tbody></table>
<h2>Feature services</h2><table id="services"><thead><tr><th>service</th><th>views</th><th class="num">features</th><th>owner</th>
<th>models</th><th>description</th></tr></thead><tbody>{service_rows}</tbody></table>
<h2>Models</h2><ul>{models}</ul>
<h2>Lineage</h2><div class="card">{lineage_svg(snapshot["lineage"], links)}</div>"""
    return page("Features", body, links, snapshot)


def _dl(items: list[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _freshness_card(view: dict[str, Any]) -> str:
    f = view["freshness"]

    def side(label: str, info: dict[str, Any]) -> str:
        if not info or info.get("status") == "n/a":
            return f"<dt>{label}</dt><dd>{badge('n/a', label)}</dd>"
        age = f'{info["age_hours"]:.1f} h old' if info.get("age_hours") is not None else ""
        return (f'<dt>{label}</dt><dd>{badge(info["status"], label)} newest value {e((info.get("newest") or "–")[:19])} '
                f'<span class="muted">{e(age)} · {e(info.get("reason"))}</span></dd>')

    failing = ", ".join(f["failing_checks"])
    checks = [c for c in view["checks"] if c["kind"] == "freshness"]
    latest = {}
    for c in sorted(checks, key=lambda c: c["timestamp"]):
        latest[(c["asset"], c["check"])] = c
    check_line = ", ".join(f'{e(a)} {e(n)} {badge("passing" if c["passed"] else "failing", "check")}' for (a, n), c in sorted(latest.items()))
    return (f'<div class="card"><h2 style="margin-top:0">Freshness {badge(f["status"], "freshness")}</h2><dl>'
            f'<dt>SLA</dt><dd>{e(fmt(f["sla_hours"]))} h (tag freshness_sla_hours)</dd>{side("offline", f["offline"])}'
            f'{side("online", f["online"])}{f"<dt>checks</dt><dd>{check_line}</dd>" if check_line else ""}'
            f'{f"<dt>failing checks</dt><dd>{e(failing)}</dd>" if failing else ""}</dl></div>')


def _value_html(value: Any) -> str:
    """A check's metadata value, readable: records as a table, mappings as a list of name/value pairs."""
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        columns = list(dict.fromkeys(key for item in value for key in item))
        head = "".join(f"<th>{e(column)}</th>" for column in columns)
        body = "".join("<tr>" + "".join(f"<td>{_value_html(item.get(column))}</td>" for column in columns) + "</tr>" for item in value)
        return f'<table class="inner"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    if isinstance(value, dict):
        return _metadata_table(value)
    if isinstance(value, list):
        return e(", ".join(fmt(item) for item in value)) or "–"
    return e(fmt(value))


def _metadata_table(metadata: dict[str, Any]) -> str:
    rows = "".join(f'<tr><th>{e(key)}</th><td>{_value_html(value)}</td></tr>' for key, value in metadata.items())
    return f'<table class="inner meta"><tbody>{rows}</tbody></table>'


def _check_details(check: dict[str, Any]) -> str:
    description = f'<div>{e(check["description"] or "")}</div>'
    if not check["metadata"]:
        return description
    return f'{description}<details open><summary>details</summary>{_metadata_table(check["metadata"])}</details>'


def _checks_table(checks: list[dict[str, Any]]) -> str:
    if not checks:
        return '<p class="muted">No asset check results in Dagster for this view yet.</p>'
    rows = "".join(
        f'<tr><td>{e(c["asset"])}</td><td>{e(c["check"])}</td><td>{e(c["kind"])}</td><td>{e(c["partition"] or "–")}</td>'
        f'<td>{badge("passing" if c["passed"] else ("warning" if c["severity"] == "WARN" else "failing"), "result")}</td>'
        f'<td>{e(c["timestamp"][:19])}</td><td class="small">{_check_details(c)}</td></tr>'
        for c in checks
    )
    return (f'<table class="checks"><thead><tr><th>asset</th><th>check</th><th>kind</th><th>partition</th><th>result</th>'
            f'<th>at (UTC)</th><th>details</th></tr></thead><tbody>{rows}</tbody></table>')


def _partitions_table(view: dict[str, Any]) -> str:
    dagster = view.get("dagster") or {}
    offline_m = {m["partition"]: m for m in (dagster.get("offline") or {}).get("partitions", [])}
    online_m = {m["partition"]: m for m in (dagster.get("online") or {}).get("partitions", [])}
    checks: dict[str, list[dict[str, Any]]] = {}
    for c in view["checks"]:
        if c["partition"]:
            checks.setdefault(c["partition"], []).append(c)
    lake = {p["date"]: p for p in view["offline"]["partitions"]}
    dates = sorted(set(lake) | set(filter(None, offline_m)) | set(filter(None, online_m)), reverse=True)
    if not dates:
        return '<p class="muted">No partitions in the offline store or in Dagster yet.</p>'
    rows = []
    for day in dates:
        p = lake.get(day, {})
        results = checks.get(day, [])
        failed = [c["check"] for c in results if not c["passed"]]
        check_cell = (badge("failing", "checks", ", ".join(failed)) if failed else badge("passing", "checks")) if results else "–"
        rows.append(
            f'<tr><td>{e(day)}</td><td class="num">{fmt(p.get("rows"))}</td><td>{e((p.get("newest_event") or "–")[:19])}</td>'
            f'<td>{e((offline_m.get(day) or {}).get("timestamp", "–")[:19])}</td><td>{e((online_m.get(day) or {}).get("timestamp", "–")[:19])}</td>'
            f'<td>{check_cell}</td></tr>'
        )
    return (f'<table class="partitions"><thead><tr><th>partition</th><th class="num">rows (lake)</th><th>newest event</th>'
            f'<th>materialized (features/)</th><th>published (online/)</th><th>checks</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def render_view(snapshot: dict[str, Any], name: str, links: Links) -> str | None:
    view = _views_by_name(snapshot).get(name)
    if view is None:
        return None
    features = {f["name"]: f for f in snapshot["features"] if f["view"] == name}
    pipeline = view.get("pipeline") or {}
    inputs = ", ".join(f"raw/{t} ({d} days back)" if d else f"raw/{t}" for t, d in pipeline.get("inputs", {}).items())
    rows = "".join(
        f'<tr><td><a href="{links.feature(name, field["name"])}">{e(field["name"])}</a></td><td>{e(field["dtype"])}</td>'
        f'<td>{e(field["description"])}</td>'
        + "".join(f'<td class="num">{fmt((features[field["name"]].get("stats") or {}).get(k))}</td>' for k in ("min", "mean", "max"))
        + f'<td class="num">{pct((features[field["name"]].get("stats") or {}).get("null_rate"))}</td>'
        f'<td>{histogram_svg((features[field["name"]].get("stats") or {}).get("histogram"), width=120, height=26, mini=True)}</td></tr>'
        for field in view["features"]
    )
    offline = view["offline"]
    body = f"""<p class="muted small"><a href="{links.index()}">catalog</a> / feature view</p>
<h1>{e(name)} {_feature_badges(view)}</h1><p>{e(view["description"])}</p>
<div class="grid"><div class="card">{_dl([
        ("owner", f'<span class="owner">{e(view["owner"])}</span>'), ("entities", e(", ".join(view["entities"]))),
        ("join keys", e(", ".join(view["join_keys"]))), ("ttl", e(duration(view["ttl_seconds"]))),
        ("online", e(view["online"])), ("tags", tags(view["tags"])),
        ("feature services", ", ".join(f'<a href="{links.service(s)}">{e(s)}</a>' for s in view["feature_services"]) or "–"),
        ("models", e(", ".join(view["models"])) or "–")])}</div>
<div class="card">{_dl([
        ("pipeline", f'<code>{e(pipeline.get("module", "–"))}</code>' + (f' <span class="error">{e(pipeline["error"])}</span>' if pipeline.get("error") else "")),
        ("reads", e(inputs) or "–"), ("Dagster assets", f'<code>{e(view["assets"]["offline"])}</code> → <code>{e(view["assets"]["online"])}</code>'),
        ("offline table", f'<code>{e(offline["path"])}</code>'), ("rows", fmt(offline["rows"])),
        ("partitions", fmt(len(offline["partitions"]))), ("stats computed in", f'{fmt(offline.get("stats_seconds"))} s'),
        ("problem", e(offline.get("error", "none")))])}</div></div>
{_freshness_card(view)}
<h2>Features</h2><table><thead><tr><th>feature</th><th>type</th><th>description</th><th class="num">min</th><th class="num">mean</th>
<th class="num">max</th><th class="num">nulls</th><th>distribution</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Validation {badge(view["validation"]["status"], "validation", view["validation"]["summary"])}</h2>
<p class="muted">{e(view["validation"]["summary"])}. Latest result of each check:</p>{_checks_table(view["validation"]["latest"])}
<h2>Partitions</h2>{_partitions_table(view)}
<h2>Lineage</h2><div class="card">{lineage_svg(snapshot["lineage"], links, focus=f"feature_view:{name}")}</div>
{f'<p class="small">JSON: <a href="{links.api("feature-views/" + quote(name))}">{e(links.api("feature-views/" + name))}</a></p>' if links.api("") else ""}"""
    return page(name, body, links, snapshot)


def _drift_badge(feature: dict[str, Any]) -> str:
    drifts = feature.get("drift") or []
    if not drifts:
        return ""
    breached = [d["source"] for d in drifts if d["breached"]]
    return " " + badge("failing" if breached else "passing", "drift",
                       f"drifted ({', '.join(breached)})" if breached else "within the drift thresholds")


def render_feature(snapshot: dict[str, Any], view_name: str, name: str, links: Links) -> str | None:
    feature = next((f for f in snapshot["features"] if f["view"] == view_name and f["name"] == name), None)
    if feature is None:
        return None
    view = _views_by_name(snapshot)[view_name]
    stats = feature.get("stats") or {}
    quantiles = stats.get("quantiles") or {}
    stat_rows = [
        ("rows", fmt(stats.get("count"))), ("nulls", f'{fmt(stats.get("nulls"))} ({pct(stats.get("null_rate"))})'),
        ("distinct", "≈ " + fmt(stats.get("distinct"))), ("min", fmt(stats.get("min"))), ("mean", fmt(stats.get("mean"))),
        ("std", fmt(stats.get("std"))), ("max", fmt(stats.get("max"))),
        *((f"p{float(q) * 100:g}", fmt(v)) for q, v in quantiles.items()),
    ]
    if stats.get("nans"):
        stat_rows.append(("NaN", fmt(stats["nans"])))
    if stats.get("error"):
        stat_rows.append(("problem", e(stats["error"])))
    stats_table = "".join(f'<tr><th>{e(k)}</th><td class="num">{v}</td></tr>' for k, v in stat_rows)
    body = f"""<p class="muted small"><a href="{links.index()}">catalog</a> / <a href="{links.view(view_name)}">{e(view_name)}</a> / feature</p>
<h1 id="feature-name">{e(feature["id"])} {_feature_badges(view)}{_drift_badge(feature)}</h1><p>{e(feature["description"])}</p>
<div class="grid"><div class="card">{_dl([
        ("owner", f'<span class="owner" id="owner">{e(feature["owner"])}</span>'), ("type", e(feature["dtype"])),
        ("feature view", f'<a href="{links.view(view_name)}">{e(view_name)}</a> — {e(view["description"])}'),
        ("entities", e(", ".join(feature["entities"]))), ("join keys", e(", ".join(feature["join_keys"]))),
        ("tags", tags({**feature["view_tags"], **feature["tags"]})),
        ("feature services", ", ".join(f'<a href="{links.service(s)}">{e(s)}</a>' for s in feature["feature_services"]) or "–"),
        ("models", _model_links(snapshot, feature["models"], links)),
        ("Feast reference", f'<code>{e(feature["id"])}</code>')])}</div>
{_freshness_card(view)}</div>
<h2>Values</h2><div class="grid"><div class="card"><table class="stats"><tbody>{stats_table}</tbody></table>
<p class="muted small">over all {fmt(len(view["offline"]["partitions"]))} partitions of the offline store; distinct count is a HyperLogLog estimate</p></div>
<div class="card"><h2 style="margin-top:0">Histogram</h2>{histogram_svg(stats.get("histogram"))}</div></div>
<h2>Validation {badge(view["validation"]["status"], "validation", view["validation"]["summary"])}</h2>{_checks_table(view["validation"]["latest"])}
{drift_section(feature)}
<h2>Lineage</h2><div class="card">{lineage_svg(snapshot["lineage"], links, focus=f"feature_view:{view_name}", only_connected=True)}</div>"""
    return page(feature["id"], body, links, snapshot)


def render_service(snapshot: dict[str, Any], name: str, links: Links) -> str | None:
    service = next((s for s in snapshot["feature_services"] if s["name"] == name), None)
    if service is None:
        return None
    views = _views_by_name(snapshot)
    rows = "".join(
        f'<tr><td><a href="{links.feature(f["view"], f["feature"])}">{e(f["feature"])}</a></td>'
        f'<td><a href="{links.view(f["view"])}">{e(f["view"])}</a></td>'
        f'<td>{_feature_badges(views[f["view"]]) if f["view"] in views else "unknown view"}</td></tr>'
        for f in service["features"]
    )
    body = f"""<p class="muted small"><a href="{links.index()}">catalog</a> / feature service</p><h1>{e(name)}</h1>
<p>{e(service["description"])}</p><div class="card">{_dl([("owner", e(service["owner"])), ("tags", tags(service["tags"])),
        ("models", e(", ".join(service["models"])) or "–")])}</div>
<h2>Features</h2><table><thead><tr><th>feature</th><th>view</th><th>status</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Lineage</h2><div class="card">{lineage_svg(snapshot["lineage"], links, focus=f"feature_service:{name}")}</div>"""
    return page(name, body, links, snapshot)


def _aliases_text(model: dict[str, Any]) -> str:
    """e.g. "champion v3 · challenger v4 · 4 versions"."""
    parts = [f"{alias} v{v['version']}" for v in model.get("versions", []) for alias in v["aliases"]]
    return e(" · ".join([*parts, f"{len(model.get('versions', []))} versions"]))


def _model_links(snapshot: dict[str, Any], names: list[str], links: Links) -> str:
    by_name = {m["name"]: m for m in snapshot["models"]}
    return "<br>".join(f'<a href="{links.model(name)}">{e(name)}</a> <span class="muted small">{_aliases_text(by_name.get(name, {}))}</span>'
                       for name in names) or "–"


def render_model(snapshot: dict[str, Any], name: str, links: Links) -> str | None:
    model = next((m for m in snapshot["models"] if m["name"] == name), None)
    if model is None:
        return None
    rows = "".join(
        f'<tr><td class="num">{e(v["version"])}</td><td>{e(", ".join(v["aliases"])) or "–"}</td>'
        f'<td class="num">{fmt(v["metrics"].get("test_roc_auc"))}</td><td class="num">{fmt(v["metrics"].get("test_pr_auc"))}</td>'
        f'<td class="num">{fmt(v["metrics"].get("test_calibration_error"))}</td>'
        f'<td>{ {True: "passed", False: "failed", None: "–"}[v["gate_passed"]] }</td>'
        f'<td>{f"""<a class="run" href="{e(v["run_url"])}">run {e(v["run_id"][:8])}</a>""" if v["run_url"] else "–"}</td></tr>'
        for v in model.get("versions", [])
    )
    features = "".join(f'<li><a href="{links.feature(f["view"], f["feature"])}">{e(f["view"])}:{e(f["feature"])}</a></li>'
                       for f in model.get("features", []))
    service = model.get("feature_service")
    body = f"""<p class="muted small"><a href="{links.index()}">catalog</a> / model</p><h1>{e(name)}</h1>
<div class="card">{_dl([
        ("feature service", f'<a href="{links.service(service)}">{e(service)}</a>' if service else "–"),
        ("aliases", _aliases_text(model)),
        (f"version {e(model['version'])}", f'<a id="run-link" href="{e(model["run_url"])}">its MLflow run</a>' if model.get("run_url") else "–"),
        ("problem", e(model["error"])) if model.get("error") else ("trained on", ", ".join(
            f"{e(view)} <code>{e(fingerprint)}</code>" for view, fingerprint in model.get("feature_views", {}).items()) or "–")])}</div>
<h2>Versions</h2><table id="versions"><thead><tr><th class="num">version</th><th>aliases</th><th class="num">ROC AUC</th>
<th class="num">PR AUC</th><th class="num">calibration error</th><th>gate</th><th>MLflow</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Features (version {e(model["version"])})</h2><ul>{features or '<li class="muted">none readable</li>'}</ul>
<h2>Lineage</h2><div class="card">{lineage_svg(snapshot["lineage"], links, focus=f"model:{name}", only_connected=True)}</div>"""
    return page(name, body, links, snapshot)


def render_lineage(snapshot: dict[str, Any], links: Links) -> str:
    body = (f'<h1>Lineage</h1><p class="muted">raw table → pipeline → feature view → feature service → model</p>'
            f'<div class="card">{lineage_svg(snapshot["lineage"], links)}</div>')
    return page("Lineage", body, links, snapshot)


def export_static(snapshot: dict[str, Any], directory) -> list[str]:
    """Write every page of the snapshot as plain HTML files into `directory`; returns the file names."""
    from pathlib import Path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    links = StaticLinks()
    pages = {links.index(): render_index(snapshot, links), links.lineage(): render_lineage(snapshot, links)}
    for view in snapshot["feature_views"]:
        pages[links.view(view["name"])] = render_view(snapshot, view["name"], links)
    for feature in snapshot["features"]:
        pages[links.feature(feature["view"], feature["name"])] = render_feature(snapshot, feature["view"], feature["name"], links)
    for service in snapshot["feature_services"]:
        pages[links.service(service["name"])] = render_service(snapshot, service["name"], links)
    for model in snapshot["models"]:
        pages[links.model(model["name"])] = render_model(snapshot, model["name"], links)
    for file_name, html in pages.items():
        (directory / file_name).write_text(html)
    return sorted(pages)
