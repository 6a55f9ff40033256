"""The page's only stylesheet, inlined in a ``<style>`` element (the CSP allows inline styles
and nothing else: no external sheets, fonts or ``url()``)."""

CSS = """
:root { --pass:#1b7f3b; --pass-bg:#e3f4e8; --fail:#b3261e; --fail-bg:#fbe4e2;
  --muted:#5f6368; --line:#d9dce1; --head:#f3f5f8; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color:#1f2328; margin:0; background:#fff; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 28px 40px; }
header { border-bottom: 3px solid #1f2328; padding-bottom: 12px; margin-bottom: 8px; }
h1 { font-size: 26px; margin: 0 0 6px; }
h2 { font-size: 20px; margin: 28px 0 8px; padding-top: 8px; border-top: 1px solid var(--line); }
h3 { font-size: 16px; margin: 18px 0 6px; }
.muted, .note { color: var(--muted); }
.note { font-size: 13px; margin: 4px 0 10px; }
code, .mono { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 10px 0; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.verdict { font-size: 17px; font-weight: 700; padding: 10px 14px; border-radius: 6px;
  margin: 10px 0; }
.verdict.pass { color: var(--pass); background: var(--pass-bg); border: 1px solid var(--pass); }
.verdict.fail { color: var(--fail); background: var(--fail-bg); border: 1px solid var(--fail); }
nav { font-size: 13px; margin: 6px 0 0; } nav a { margin-right: 14px; color: #0b57d0; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.failrow td { background: var(--fail-bg); }
.badge { display: inline-block; min-width: 44px; text-align: center; font-weight: 700;
  border-radius: 4px; padding: 0 6px; font-size: 12px; }
.badge.pass { color: #fff; background: var(--pass); }
.badge.fail { color: #fff; background: var(--fail); }
.badge.na { color: #1f2328; background: #e8eaed; }
.badge.phase { color: #1f2328; background: #e8eaed; font-weight: 600; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px;
  vertical-align: baseline; border: 1px solid rgba(0,0,0,.25); }
.sitename { font-weight: 600; overflow-wrap: anywhere; }
.expl { max-width: 520px; overflow-wrap: anywhere; }
.comp { color: var(--muted); font-size: 11px; margin-top: 2px; overflow-wrap: anywhere; }
.reason { font-weight: 600; white-space: nowrap; }
.reason.ok { color: var(--pass); } .reason.bad { color: var(--fail); }
figure { margin: 8px 0 16px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
.heatmaps { display: flex; flex-wrap: wrap; gap: 12px; }
.heatmaps figure { width: 220px; margin: 0; overflow-wrap: anywhere; }
.heatmaps .missing { width: 220px; min-height: 120px; border: 2px dashed var(--fail);
  padding: 8px; font-size: 12px; }
.heatmaps figure img { width: 220px; image-rendering: pixelated; }
.problem { color: var(--fail); }
table.peers td.self { color: var(--muted); background: #f6f7f9; }
table.peers td:first-child { min-width: 180px; }
table.peers tr.median td { border-top: 2px solid #1f2328; background: var(--head); }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line);
  padding-top: 8px; }
@media print { nav { display: none; } h2 { break-after: avoid; }
  figure, tr { break-inside: avoid; } }
"""
