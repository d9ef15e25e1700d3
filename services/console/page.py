"""The console's page: HTML, CSS and a small script; no external assets."""

PAGE = rb"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Nubis console</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:20px;
align-items:baseline}
header h1{font-size:18px;margin:0}
header span{opacity:.8}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));
gap:14px;padding:14px}
section{background:#fff;border-radius:6px;padding:10px 14px;
box-shadow:0 1px 2px rgba(0,0,0,.08);overflow:auto}
h2{font-size:15px;margin:4px 0 8px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:3px 8px 3px 0;border-bottom:1px solid #eee;
white-space:nowrap}
td.n,th.n{text-align:right}
.empty{color:#888;font-style:italic}
.err{color:#b00020}
svg text{font-size:10px;fill:#555}
</style></head>
<body>
<header><h1>Nubis console</h1><span id="kernel">connecting...</span>
<span id="updated"></span></header>
<main>
<section><h2>Tenants</h2><div id="tenants"></div></section>
<section><h2>Usage per tenant</h2><div id="usage"></div></section>
<section><h2>Queues</h2><div id="queues"></div></section>
<section><h2>Blobs</h2><div id="blobs"></div></section>
<section><h2>Cloud processes</h2><div id="processes"></div></section>
<section><h2>Listeners and connections</h2><div id="listeners"></div></section>
<section><h2>Latency of recent cloud calls (round trip, from this console)</h2>
<div id="latency"></div><svg id="chart" width="400" height="120"></svg></section>
<section><h2>In-kernel service time per call (us)</h2><div id="calls"></div>
</section>
</main>
<script>
"use strict";
function esc(v){return String(v).replace(/[&<>"']/g,function(c){
  return {"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c];});}
function table(id, rows, cols){
  var el=document.getElementById(id);
  if(!rows.length){el.innerHTML='<p class="empty">none</p>';return;}
  var h='<table><tr>'+cols.map(function(c){
    return '<th'+(c[2]?' class="n"':'')+'>'+esc(c[1])+'</th>';}).join('')+'</tr>';
  rows.forEach(function(r){h+='<tr>'+cols.map(function(c){
    var v=typeof c[0]==="function"?c[0](r):r[c[0]];
    return '<td'+(c[2]?' class="n"':'')+' data-col="'+esc(c[1])+'">'
      +esc(v)+'</td>';}).join('')+'</tr>';});
  el.innerHTML=h+'</table>';
}
function chart(points){
  var svg=document.getElementById("chart"),w=400,h=120,pad=30;
  if(!points.length){svg.innerHTML="";return;}
  var max=Math.max.apply(null,points.map(function(p){return p.p99_us;}))||1;
  function line(key,color){
    var d=points.map(function(p,i){
      var x=pad+(w-pad-4)*(points.length>1?i/(points.length-1):1);
      var y=h-16-(h-26)*p[key]/max;
      return (i?"L":"M")+x.toFixed(1)+" "+y.toFixed(1);}).join(" ");
    return '<path d="'+d+'" fill="none" stroke="'+color+'" stroke-width="1.5"/>';
  }
  svg.innerHTML='<line x1="'+pad+'" y1="'+(h-16)+'" x2="'+w+'" y2="'+(h-16)
    +'" stroke="#ccc"/><text x="0" y="12">'+esc(max.toFixed(0))+' us</text>'
    +'<text x="0" y="'+(h-16)+'">0</text>'+line("p50_us","#2a7ae2")
    +line("p99_us","#e2572a")+'<text x="'+pad+'" y="'+(h-2)
    +'">p50 (blue), p99 (red), one point per refresh</text>';
}
function render(s){
  var k=s.kernel;
  document.getElementById("kernel").textContent="kernel "+k.version+", up "
    +k.uptime.toFixed(0)+" s, tenant "+k.tenant+", "+k.endpoints.join(" ");
  table("tenants",s.tenants,[["name","tenant"],[function(t){
    return t.admin?"admin":"";},"role"],[function(t){
    return t.ports.join(" ");},"ports"]]);
  table("usage",s.usage,[["tenant","tenant"],["calls","calls",1],
    ["errors","errors",1],["bytes_stored","stored B",1],["queues","queues",1],
    ["blobs","blobs",1],["messages_sent","sent",1],["processes","procs",1],
    ["cpu_seconds","cpu s",1],["connections","conns",1]]);
  table("queues",s.queues,[["name","queue"],["depth","depth",1],
    ["in_flight","in flight",1],["delayed","delayed",1],
    ["oldest_age_ms","oldest ms",1]]);
  table("blobs",s.blobs,[["key","key"],["size","bytes",1],
    ["content_type","type"],["etag","etag"]]);
  table("processes",s.processes,[["pid","pid"],["name","name"],
    ["state","state"],["attempts","attempts",1],["os_pid","os pid",1],
    ["cpu_seconds","cpu s",1],["error","error"]]);
  table("listeners",s.listeners,[["port","port",1],["connections","conns",1],
    ["backlog","backlog",1],["accepted","accepted",1],["refused","refused",1],
    [function(l){return l.attached.map(function(a){
      return a.pid+" ("+a.connections+")";}).join(" ");},"attached (conns)"]]);
  var l=s.latency;
  table("latency",[l],[["calls","calls",1],["p50_us","p50 us",1],
    ["p90_us","p90 us",1],["p99_us","p99 us",1],["max_us","max us",1]]);
  chart(l.points);
  table("calls",s.calls,[["call","call"],["count","count",1],
    ["p50_us","p50",1],["p99_us","p99",1],["p999_us","p99.9",1],
    ["max_us","max",1]]);
  document.getElementById("updated").textContent="updated "
    +new Date().toLocaleTimeString();
}
function refresh(){
  fetch("/api/state",{cache:"no-store"}).then(function(r){return r.json();})
  .then(function(s){
    if(s.error){throw new Error(s.error);}
    render(s);
  }).catch(function(e){
    var el=document.getElementById("updated");
    el.className="err";el.textContent="cannot read the kernel: "+e.message;
  });
}
refresh();
setInterval(refresh,2000);
</script>
</body></html>
"""
