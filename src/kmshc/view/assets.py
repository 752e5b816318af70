"""The page frame: inline style and script, so the report needs no network and no server.

The script only drives the attention-pattern view (section 5); every other chart is static SVG.
It reads its data from ``<script type="application/json" id="attn-data">`` and does nothing when
that block is absent, so index pages and reports without patterns run it without errors.
"""
from __future__ import annotations

from html import escape

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1100px;
padding:16px 24px;color:#222}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
h3{font-size:15px;margin:16px 0 6px}
nav a{margin-right:12px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}table.kv td:first-child{color:#555}
pre{background:#f6f8fa;padding:8px;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
.verdict{padding:8px 12px;border-radius:4px;background:#fff7e0}.verdict.ok{background:#e6f6e6}
.verdict.bad{background:#fde8e8}
.scroll{overflow-x:auto}.note{color:#666;font-size:12px}.rank{color:#888;font-size:11px}
svg text.ax{font-size:11px;fill:#444;text-anchor:middle}svg text.end{text-anchor:end}
svg text.start{text-anchor:start}svg .axis{stroke:#444}svg .ref{stroke:#999;stroke-dasharray:4 3}
svg rect.cell:hover{stroke:#000;stroke-width:2}
.tokens{margin:6px 0 14px;line-height:2}.tok{padding:2px 1px;margin:0 1px;border-radius:2px;white-space:pre;
border:1px solid transparent;cursor:default}.tok.q{border-color:#d62728}
"""

SCRIPT = """
(function(){
  var el=document.getElementById('attn-data');
  if(!el){return;}
  var data=JSON.parse(el.textContent), sel=document.getElementById('attn-head'),
      box=document.getElementById('attn-examples');
  var heads=data.length?Object.keys(data[0].heads):[];
  heads.forEach(function(h){var o=document.createElement('option');o.value=h;o.textContent=h;sel.appendChild(o);});
  function draw(){
    box.textContent='';
    data.forEach(function(ex,i){
      var p=document.createElement('div');p.className='tokens';
      var cap=document.createElement('div');cap.className='note';
      cap.textContent='example '+(i+1)+' (answer:'+ex.answer+')';box.appendChild(cap);
      var spans=ex.tokens.map(function(t,j){
        var s=document.createElement('span');s.className='tok';s.textContent=t;s.dataset.pos=j;p.appendChild(s);return s;});
      function shade(q){
        var row=(ex.heads[sel.value]||[])[q]||[];
        spans.forEach(function(s,j){var a=row[j]||0;
          s.style.background='rgba(214,39,40,'+a.toFixed(3)+')';
          s.title=ex.tokens[q]+' -> '+ex.tokens[j]+': '+a.toFixed(3);
          s.classList.toggle('q',j===q);});
      }
      spans.forEach(function(s,j){s.addEventListener('mouseenter',function(){shade(j);});});
      p.addEventListener('mouseleave',function(){shade(ex.query);});
      shade(ex.query);box.appendChild(p);
    });
  }
  sel.addEventListener('change',draw);draw();
})();
"""


def page(title: str, body: str, nav: bool = True) -> str:
    """A complete HTML document around ``body`` (already HTML), with the style and script inlined."""
    links = ('<nav><a href="#summary">Summary</a><a href="#grid">Head grid</a><a href="#certificate">Certificate</a>'
             '<a href="#curves">Faithfulness</a><a href="#heads">Heads</a><a href="#trace">Search trace</a></nav>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n<h1>{escape(title)}</h1>\n"
            f"{links if nav else ''}\n{body}\n<script>{SCRIPT}</script>\n</body></html>\n")
