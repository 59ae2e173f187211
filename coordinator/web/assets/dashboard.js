// The ddpm coordinator dashboard. It polls api/summary and api/loss about once a second and
// redraws without reloading. Everything it plots stays on window.ddpm (the state) and
// window.ddpm.plotted() (the arrays the charts hold), for the console and the browser test.
(function () {
  "use strict";

  var POLL_MS = 1000;
  var RATE_KEEP = 600; // step-rate samples kept per trainer
  // Step-rate series kept for trainers that are no longer members (the most recently seen
  // ones): with trainer churn (a new id at each restart) the page would keep one per id ever
  // seen, its data and chart growing for as long as it stays open.
  var RATE_DEPARTED_KEEP = 4;
  var COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

  var st = {
    points: [],        // the loss history as the server holds it (fsm.LossPoint objects)
    generation: null,  // generation the history was fetched under
    summary: null,     // last api/summary
    rates: {},         // id -> [[unix seconds, steps/s], ...]: the members' and RATE_DEPARTED_KEEP departed
    lastSeen: {},      // member id -> {step, hb} of the previous summary (members only)
    polls: 0, updates: 0, fullFetches: 0, errors: 0, lastError: "",
    smoothing: 0.9,
  };
  window.ddpm = st;

  // smooth is TensorBoard's debiased exponential moving average (internal/viz.Smooth); nulls
  // pass through and do not move the average.
  function smooth(ys, w) {
    var out = new Array(ys.length), acc = 0, norm = 0;
    for (var i = 0; i < ys.length; i++) {
      var y = ys[i];
      if (y === null || !isFinite(y)) { out[i] = null; continue; }
      acc = w * acc + (1 - w) * y;
      norm = w * norm + (1 - w);
      out[i] = acc / norm;
    }
    return out;
  }
  st.smooth = smooth;

  function positive(y) { return (typeof y === "number" && isFinite(y) && y > 0) ? y : null; }

  function getJSON(url) {
    return fetch(url, { cache: "no-store" }).then(function (r) {
      if (!r.ok) { return r.text().then(function (t) { throw new Error(url + ": " + r.status + " " + t.trim()); }); }
      return r.json();
    });
  }

  // fetchLoss asks for the points after the newest one held and keeps them when the server's
  // totals confirm that the held prefix is unchanged; otherwise (compaction, a rollback by a new
  // generation) it refetches the whole history. It resolves to true when the history changed.
  function fetchLoss() {
    var n = st.points.length;
    var from = n ? st.points[n - 1].step + 1 : 0;
    return getJSON("api/loss?from=" + from).then(function (doc) {
      var held = 0;
      for (var i = 0; i < n; i++) held += st.points[i].count;
      for (var j = 0; j < doc.points.length; j++) held += doc.points[j].count;
      if (doc.generation === st.generation && n + doc.points.length === doc.points_total && held === doc.reports_total) {
        st.points = st.points.concat(doc.points);
        return doc.points.length > 0;
      }
      return getJSON("api/loss").then(function (all) {
        st.points = all.points;
        st.generation = all.generation;
        st.fullFetches++;
        return true;
      });
    });
  }

  // ---- charts ----
  var charts = {};

  function width(el) { return Math.max(300, el.clientWidth || 600); }

  function makeChart(key, elId, series, data, opts) {
    var el = document.getElementById(elId);
    if (charts[key]) { charts[key].destroy(); }
    var o = {
      width: width(el), height: opts.height || 260,
      scales: opts.scales || { x: { time: false } },
      axes: opts.axes || [{}, {}],
      series: [{ label: opts.xLabel || "step" }].concat(series),
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
    };
    charts[key] = new uPlot(o, data, el);
    return charts[key];
  }

  function lossData() {
    var xs = [], raw = [], q = [[], [], [], []];
    for (var i = 0; i < st.points.length; i++) {
      var p = st.points[i];
      xs.push(p.step);
      raw.push(positive(p.loss));
      for (var k = 0; k < 4; k++) q[k].push(positive((p.loss_quartiles || [])[k]));
    }
    return { xs: xs, raw: raw, q: q };
  }

  function drawLoss() {
    var d = lossData(), w = st.smoothing;
    var loss = [d.xs, d.raw, smooth(d.raw, w)];
    if (!charts.loss) {
      makeChart("loss", "chart-loss", [
        { label: "per report", stroke: "#c0c4cc", width: 1 },
        { label: "smoothed", stroke: "#1f77b4", width: 2 },
      ], loss, { scales: { x: { time: false }, y: { distr: 3 } } });
    } else {
      charts.loss.setData(loss);
    }
    var quart = [d.xs].concat(d.q.map(function (ys) { return smooth(ys, w); }));
    if (!charts.quartiles) {
      var names = ["t in [0,T/4)", "[T/4,T/2)", "[T/2,3T/4)", "[3T/4,T)"];
      makeChart("quartiles", "chart-quartiles", names.map(function (n, i) {
        return { label: n, stroke: COLORS[i], width: 1.5 };
      }), quart, { scales: { x: { time: false }, y: { distr: 3 } } });
    } else {
      charts.quartiles.setData(quart);
    }
    var xs = d.xs, c = [], a = [], wt = [];
    for (var i = 0; i < st.points.length; i++) {
      c.push(st.points[i].compute_sec); a.push(st.points[i].allreduce_sec); wt.push(st.points[i].wait_sec);
    }
    var time = [xs, c, a, wt];
    if (!charts.time) {
      makeChart("time", "chart-time", [
        { label: "compute", stroke: COLORS[0], width: 1.5 },
        { label: "all-reduce", stroke: COLORS[1], width: 1.5 },
        { label: "wait", stroke: COLORS[3], width: 1.5 },
      ], time, { height: 220 });
    } else {
      charts.time.setData(time);
    }
  }

  function drawRates() {
    var ids = Object.keys(st.rates).sort();
    var times = {};
    ids.forEach(function (id) { st.rates[id].forEach(function (s) { times[s[0]] = true; }); });
    var xs = Object.keys(times).map(Number).sort(function (a, b) { return a - b; });
    var data = [xs];
    ids.forEach(function (id) {
      var byT = {};
      st.rates[id].forEach(function (s) { byT[s[0]] = s[1]; });
      data.push(xs.map(function (t) { return t in byT ? byT[t] : null; }));
    });
    var key = ids.join(",");
    if (!charts.rate || charts.rateKey !== key) {
      makeChart("rate", "chart-rate", ids.map(function (id, i) {
        return { label: id, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true };
      }), data, { height: 220, xLabel: "time", scales: { x: { time: true } } });
      charts.rateKey = key;
    } else {
      charts.rate.setData(data);
    }
  }

  // ---- summary ----
  function nsTime(ns) { return ns ? new Date(ns / 1e6).toLocaleTimeString() : "-"; }
  function nsDate(ns) { return ns ? new Date(ns / 1e6).toLocaleString() : "-"; }

  function fillDL(id, rows) {
    var dl = document.getElementById(id);
    dl.textContent = "";
    rows.forEach(function (r) {
      var dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = r[0]; dd.textContent = r[1] === undefined || r[1] === "" ? "-" : String(r[1]);
      dl.appendChild(dt); dl.appendChild(dd);
    });
  }

  // updateRates adds a step-rate sample for every member whose heartbeat moved on since the
  // previous summary, then bounds what it keeps: lastSeen holds the current members only, and
  // rates the current members' series plus those of the RATE_DEPARTED_KEEP departed trainers
  // with the newest samples (ties: the greater id).
  function updateRates(s) {
    var members = {};
    (s.members || []).forEach(function (m) {
      members[m.id] = true;
      var prev = st.lastSeen[m.id];
      st.lastSeen[m.id] = { step: m.step, hb: m.last_heartbeat };
      if (!prev || m.last_heartbeat <= prev.hb || m.step < prev.step) return;
      var rate = (m.step - prev.step) / ((m.last_heartbeat - prev.hb) / 1e9);
      var list = st.rates[m.id] || (st.rates[m.id] = []);
      list.push([m.last_heartbeat / 1e9, rate]);
      if (list.length > RATE_KEEP) list.splice(0, list.length - RATE_KEEP);
    });
    Object.keys(st.lastSeen).forEach(function (id) {
      if (!members[id]) delete st.lastSeen[id];
    });
    var departed = Object.keys(st.rates).filter(function (id) { return !members[id]; });
    departed.sort(function (a, b) {
      var ta = st.rates[a][st.rates[a].length - 1][0], tb = st.rates[b][st.rates[b].length - 1][0];
      return ta !== tb ? tb - ta : (a < b ? 1 : -1);
    });
    departed.slice(RATE_DEPARTED_KEEP).forEach(function (id) { delete st.rates[id]; });
  }

  function lastRate(id) {
    var l = st.rates[id];
    return l && l.length ? l[l.length - 1][1].toFixed(2) : "-";
  }

  function drawSummary(s) {
    var badge = document.getElementById("run-status");
    badge.textContent = s.status || "no run";
    badge.className = "badge " + (s.status || "");
    var pct = s.total_steps ? (100 * s.step / s.total_steps).toFixed(1) + "%" : "";
    document.getElementById("run-progress").textContent = "step " + s.step + " / " + s.total_steps + (pct ? " (" + pct + ")" : "");
    var r = s.replica || {};
    document.getElementById("replica").textContent = r.replica ? "replica " + r.replica + " (" + r.role + ", term " + r.term + ", leader " + (r.leader || "?") + ")" : "";
    var last = st.points.length ? st.points[st.points.length - 1] : null;
    // A point whose reports were all skipped steps (a non-finite gradient) has no loss.
    var lastSkipped = last && (last.skipped || 0) >= last.count;
    var skipped = 0;
    for (var i = 0; i < st.points.length; i++) skipped += st.points[i].skipped || 0;
    fillDL("run", [
      ["status", s.status + (s.reason ? ": " + s.reason : "") + (s.waiting ? ", waiting " + s.waiting : "")],
      ["preset / model", (s.preset || "-") + " / " + (s.model || "-")],
      ["global batch", s.global_batch],
      ["config", (s.config_hash || "").slice(0, 12)],
      ["loss (newest)", lastSkipped ? "none: step " + last.step + " skipped (non-finite gradient)" : last ? last.loss.toPrecision(5) : "-"],
      ["lr", last ? last.lr.toExponential(2) : "-"],
      ["grad norm", last && !lastSkipped ? last.grad_norm.toPrecision(4) : "-"],
      ["skipped steps", skipped],
      // Over the newest point's trained steps (the server derives it; a skipped step trains none).
      ["images/s", typeof s.images_per_sec === "number" ? s.images_per_sec.toFixed(1) : "-"],
      ["all-reduce busbw", last ? (last.busbw / 1e6).toFixed(1) + " MB/s" : "-"],
      ["history", s.loss_points + " points"],
    ]);
    var g = s.generation || {};
    fillDL("generation", [
      ["number", g.number],
      ["world", g.world],
      ["ring", (g.ring || []).join(" → ")],
      ["start step", g.start_step],
      ["started", nsDate(g.started_at)],
    ]);
    var cps = s.checkpoints || [];
    var c = cps.length ? cps[cps.length - 1] : null;
    fillDL("checkpoint", c ? [
      ["step", c.step],
      ["sha256", c.sha256.slice(0, 16) + "…"],
      ["size", (c.size / 1e6).toFixed(1) + " MB"],
      ["generation", c.generation],
      ["holders", (c.holders || []).join(", ")],
      ["committed", nsDate(c.time)],
      ["retained", cps.map(function (x) { return x.step; }).join(", ")],
    ] : [["step", "none committed yet"]]);

    // Checkpoints rollbacks gave up (ddpm checkpoint rollback), newest first; the section shows
    // only when there are any.
    var ab = s.abandoned || [];
    document.getElementById("abandoned-section").hidden = ab.length === 0;
    var abody = document.querySelector("#abandoned tbody");
    abody.textContent = "";
    ab.slice().reverse().forEach(function (a) {
      var tr = document.createElement("tr");
      [a.step, a.sha256.slice(0, 16) + "…", a.rolled_back_to, nsDate(a.abandoned_at)].forEach(function (v) {
        var td = document.createElement("td"); td.textContent = String(v); tr.appendChild(td);
      });
      abody.appendChild(tr);
    });

    var tbody = document.querySelector("#members tbody");
    tbody.textContent = "";
    (s.members || []).forEach(function (m) {
      var tr = document.createElement("tr");
      var rank = (g.ring || []).indexOf(m.id);
      [m.id, m.state, rank >= 0 ? rank : "-", m.step, lastRate(m.id), m.address, nsTime(m.last_heartbeat)].forEach(function (v) {
        var td = document.createElement("td"); td.textContent = String(v); tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });

    var ol = document.getElementById("timeline");
    ol.textContent = "";
    (s.events || []).slice().reverse().forEach(function (e) {
      var li = document.createElement("li");
      li.className = e.kind;
      var t = document.createElement("span"); t.className = "muted"; t.textContent = nsTime(e.time) + " ";
      var k = document.createElement("span"); k.className = "kind"; k.textContent = e.kind;
      var x = document.createElement("span"); x.textContent = " " + e.text;
      li.appendChild(t); li.appendChild(k); li.appendChild(x);
      ol.appendChild(li);
    });
  }

  // plotted returns copies of the arrays the charts hold now.
  st.plotted = function () {
    var out = {};
    Object.keys(charts).forEach(function (k) {
      if (charts[k] && charts[k].data) out[k] = charts[k].data.map(function (a) { return Array.prototype.slice.call(a); });
    });
    return out;
  };

  function poll() {
    st.polls++;
    Promise.all([getJSON("api/summary"), fetchLoss()]).then(function (res) {
      var s = res[0], changed = res[1];
      st.summary = s;
      updateRates(s);
      drawSummary(s);
      if (changed || !charts.loss) drawLoss();
      drawRates();
      if (changed) st.updates++;
      document.getElementById("conn").textContent = "updated " + new Date().toLocaleTimeString();
    }).catch(function (err) {
      st.errors++;
      st.lastError = String(err && err.message || err);
      document.getElementById("conn").textContent = "disconnected: " + st.lastError;
    }).then(function () { setTimeout(poll, POLL_MS); });
  }

  var slider = document.getElementById("smoothing");
  slider.addEventListener("input", function () {
    st.smoothing = Number(slider.value);
    document.getElementById("smoothing-value").textContent = st.smoothing.toFixed(2);
    drawLoss();
  });
  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (k) {
      var c = charts[k];
      if (c && c.root) c.setSize({ width: width(c.root.parentNode), height: c.height });
    });
  });
  poll();
})();
