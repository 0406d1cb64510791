// modelgate dashboard: reads /api/v1/history every few seconds and draws it.
// Plain DOM and inline SVG; every text from telemetry goes in through
// textContent, never as HTML. Nothing is fetched from anywhere but the
// collector that served this page.
//
// A fleet: services grouped by severity (critical, warning, inconclusive,
// pass), a search box, and the selection in the page's address, so an
// alert can link to it:
//   /?service=<service.name>&endpoint=<endpoint>&version=<version>&q=<search>
// (every part optional). The first load fetches the whole history; each
// refresh after it asks only for the points after the newest it holds
// (`?since=<unix ms>`) and appends them.
"use strict";

(function () {
  const REFRESH_MS = 3000;
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2f6fed", "#e5484d", "#12a594", "#f08c00", "#8e4ec6",
    "#0091ff", "#d6409f", "#5b8a00", "#6e56cf", "#ad7f58"];

  // Charts are drawn for the selected service, or for every endpoint when
  // the whole fleet has at most this many (a small deployment).
  const CHART_ALL_UP_TO = 12;
  // Service rows listed per severity group before "more".
  const ROWS_PER_GROUP = 200;
  const SEVERITIES = ["critical", "warning", "inconclusive", "pass"];

  const state = {
    selection: { service: "", endpoint: "", version: "" },
    search: "",
    quantile: "p95_ms",
    scale: "log",
    data: null,
    colors: new Map(),
  };

  // ---- small helpers ------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "data") for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = dv;
      else el.setAttribute(k, v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function s(tag, attrs, text) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    return el;
  }

  // A colour square; set through CSSOM, which the page's CSP allows (style
  // attributes it does not).
  function swatch(color) {
    const el = h("span", { class: "swatch" });
    el.style.background = color;
    return el;
  }

  const pad = (n) => String(n).padStart(2, "0");
  function clock(ms) {
    const d = new Date(ms);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function ago(ms, now) {
    const sec = Math.max(0, Math.round((now - ms) / 1000));
    if (sec < 60) return sec + " s";
    if (sec < 3600) return Math.floor(sec / 60) + " min " + (sec % 60) + " s";
    return Math.floor(sec / 3600) + " h " + Math.floor((sec % 3600) / 60) + " min";
  }
  function duration(ms) {
    if (ms >= 3600000) return (ms / 3600000).toFixed(ms % 3600000 ? 1 : 0) + " h";
    if (ms >= 60000) return (ms / 60000).toFixed(ms % 60000 ? 1 : 0) + " min";
    return Math.round(ms / 1000) + " s";
  }
  function fmtMs(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    if (v >= 10000) return (v / 1000).toFixed(1) + " s";
    if (v >= 100) return Math.round(v).toLocaleString("en-US") + " ms";
    if (v >= 10) return v.toFixed(1) + " ms";
    return v.toFixed(2) + " ms";
  }
  function fmtInt(v) { return Number(v || 0).toLocaleString("en-US"); }
  function fmtPct(part, whole) {
    if (!whole) return "–";
    const p = (100 * part) / whole;
    return (p >= 10 ? p.toFixed(0) : p.toFixed(1)) + " %";
  }
  function fmtValue(v, unit) {
    if (unit === "ms") return fmtMs(v);
    if (unit === "rate") return (100 * v).toFixed(1) + " %";
    return Number(v).toFixed(2) + " " + unit;
  }
  function fmtSci(v) {
    if (!isFinite(v)) return "∞";
    if (v === 0) return "0";
    if (v >= 0.01 && v < 1e4) return Number(v.toPrecision(3)).toString();
    return v.toExponential(1);
  }
  const qLabel = (key) => key.replace("_ms", "");

  function colorOf(version) {
    if (!state.colors.has(version)) {
      state.colors.set(version, PALETTE[state.colors.size % PALETTE.length]);
    }
    return state.colors.get(version);
  }

  // ---- scales and ticks ---------------------------------------------------

  function logTicks(lo, hi) {
    const ticks = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of [1, 2, 5]) {
        const t = m * Math.pow(10, e);
        if (t >= lo * 0.999 && t <= hi * 1.001) ticks.push(t);
      }
    }
    return ticks;
  }
  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }
  function linearTicks(lo, hi, count) {
    const step = niceStep(hi - lo || 1, count);
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + 1e-9; t += step) ticks.push(t);
    return ticks;
  }
  const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200]
    .map((x) => x * 1000);
  function timeTicks(lo, hi, count) {
    const raw = (hi - lo) / Math.max(1, count);
    const step = TIME_STEPS.find((x) => x >= raw) || TIME_STEPS[TIME_STEPS.length - 1];
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) ticks.push(t);
    return ticks;
  }
  function axisLabel(v) {
    if (v >= 1000) return (v / 1000).toLocaleString("en-US") + " s";
    return v.toLocaleString("en-US") + " ms";
  }

  // ---- charts -------------------------------------------------------------

  // series: [{name, color, dash, points: [[t, v|null]]}]
  function lineChart(opts) {
    const W = opts.width, H = opts.height;
    const M = { l: 62, r: 14, t: 10, b: 24 };
    const svg = s("svg", {
      class: "chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H,
      role: "img", "aria-label": opts.label,
    });
    const t0 = opts.t0, t1 = Math.max(opts.t1, opts.t0 + 1);
    const values = [];
    for (const se of opts.series) for (const [, v] of se.points) if (v !== null && v > 0) values.push(v);
    if (opts.ref) values.push(opts.ref.value);
    const log = opts.scale === "log";
    let lo, hi;
    if (!values.length) { lo = log ? 1 : 0; hi = log ? 1000 : 1; }
    else if (log) {
      lo = Math.pow(10, Math.floor(Math.log10(Math.min(...values)) * 2) / 2);
      hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...values)) * 2) / 2);
      if (hi <= lo) hi = lo * 10;
    } else {
      lo = 0;
      hi = Math.max(...values) * 1.1 || 1;
      hi = linearTicks(0, hi, 4).slice(-1)[0] < hi ? hi : linearTicks(0, hi, 4).slice(-1)[0];
    }
    const x = (t) => M.l + ((t - t0) / (t1 - t0)) * (W - M.l - M.r);
    const y = log
      ? (v) => H - M.b - ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * (H - M.t - M.b)
      : (v) => H - M.b - ((v - lo) / (hi - lo)) * (H - M.t - M.b);

    let yt = log ? logTicks(lo, hi) : linearTicks(lo, hi, 4);
    if (log && yt.length > 7) yt = yt.filter((t) => String(t).replace(/0|\./g, "") === "1");
    for (const t of yt) {
      svg.append(s("line", { class: "grid", x1: M.l, x2: W - M.r, y1: y(t), y2: y(t) }));
      svg.append(s("text", { x: M.l - 8, y: y(t) + 4, "text-anchor": "end" },
        opts.unit === "ms" ? axisLabel(t) : fmtInt(t)));
    }
    for (const t of timeTicks(t0, t1, Math.floor((W - M.l) / 110))) {
      svg.append(s("line", { class: "grid", x1: x(t), x2: x(t), y1: M.t, y2: H - M.b }));
      svg.append(s("text", { x: x(t), y: H - 6, "text-anchor": "middle" }, clock(t)));
    }
    svg.append(s("line", { class: "axis", x1: M.l, x2: W - M.r, y1: H - M.b, y2: H - M.b }));

    if (opts.ref && opts.ref.value >= lo && opts.ref.value <= hi) {
      const ry = y(opts.ref.value);
      svg.append(s("line", { class: "sla", x1: M.l, x2: W - M.r, y1: ry, y2: ry }));
      svg.append(s("text", { class: "sla-label", x: W - M.r - 4, y: ry - 5, "text-anchor": "end" },
        opts.ref.label));
    }

    for (const se of opts.series) {
      let d = "", pen = false, last = null, lone = [];
      for (const [t, v] of se.points) {
        if (v === null || (log && v <= 0)) { pen = false; continue; }
        const px = x(t).toFixed(1), py = y(Math.min(Math.max(v, lo), hi)).toFixed(1);
        d += (pen ? "L" : "M") + px + " " + py;
        if (!pen) lone.push([px, py]);
        pen = true; last = [px, py];
      }
      if (d) {
        svg.append(s("path", {
          d, fill: "none", stroke: se.color, "stroke-width": se.width || 2,
          "stroke-dasharray": se.dash || "none", "stroke-linejoin": "round", "stroke-linecap": "round",
        }));
      }
      if (last && !se.dash) svg.append(s("circle", { cx: last[0], cy: last[1], r: 3, fill: se.color }));
      if (se.points.length === 1 && lone.length) {
        svg.append(s("circle", { cx: lone[0][0], cy: lone[0][1], r: 3, fill: se.color }));
      }
    }

    // Hover: a cursor and the values at the nearest point.
    const cursor = s("line", { class: "cursor", y1: M.t, y2: H - M.b, visibility: "hidden" });
    svg.append(cursor);
    const hit = s("rect", { x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, fill: "transparent" });
    svg.append(hit);
    const tip = document.getElementById("tooltip");
    hit.addEventListener("mousemove", (ev) => {
      const box = svg.getBoundingClientRect();
      const t = t0 + ((ev.clientX - box.left) * (W / box.width) - M.l) / (W - M.l - M.r) * (t1 - t0);
      let best = null;
      for (const se of opts.series) for (const p of se.points) {
        if (!best || Math.abs(p[0] - t) < Math.abs(best - t)) best = p[0];
      }
      if (best === null) return;
      cursor.setAttribute("x1", x(best)); cursor.setAttribute("x2", x(best));
      cursor.setAttribute("visibility", "visible");
      tip.replaceChildren(h("div", { class: "t" }, clock(best)));
      for (const se of opts.series) {
        const p = se.points.find((q) => q[0] === best);
        if (!p) continue;
        tip.append(h("div", null, swatch(se.color), " ",
          se.name + ": " + (opts.unit === "ms" ? fmtMs(p[1]) : fmtInt(p[1]))));
      }
      tip.hidden = false;
      tip.style.left = (ev.clientX + 14) + "px";
      tip.style.top = (ev.clientY + 14) + "px";
    });
    hit.addEventListener("mouseleave", () => {
      cursor.setAttribute("visibility", "hidden");
      tip.hidden = true;
    });
    return svg;
  }

  // ---- sections -----------------------------------------------------------

  // How a phase of a generative model's requests is named beside its service.
  const PHASE_WORDS = {
    queue: "time in queue",
    first_token: "time to first token",
    per_output_token: "time per output token",
  };

  // A series' dimensions, its phase (nothing for the whole request) and
  // its band of input tokens (a first token's, when spans carry it).
  function extras(x) {
    const parts = x.dims.slice();
    if (x.phase && x.phase !== "request") parts.push(PHASE_WORDS[x.phase] || x.phase);
    if (x.input_tokens) parts.push(x.input_tokens + " input tokens");
    return parts.length ? " · " + parts.join(", ") : "";
  }

  function regressionKey(r) {
    return [r.service, r.endpoint, r.dims.join("/"), r.phase, r.candidate_version].join("\u0000");
  }

  function renderSummary(data) {
    const versions = new Set();
    let requests = 0, timeouts = 0;
    for (const ep of data.endpoints) for (const v of ep.versions) {
      versions.add(v.version);
      const last = v.points[v.points.length - 1];
      if (last) { requests += last.requests; timeouts += last.timeouts; }
    }
    const stat = (label, value, cls) =>
      h("div", { class: "stat " + (cls || "") }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
    document.getElementById("summary").replaceChildren(
      stat("Endpoints", fmtInt(data.endpoints.length)),
      stat("Versions", fmtInt(versions.size)),
      stat("Requests in window · timeouts", fmtInt(requests) + " · " + fmtInt(timeouts),
        timeouts ? "" : ""),
      stat("Active regressions", fmtInt(data.active.length), data.active.length ? "alarm" : "calm"),
    );
  }

  // The candidate's figure and what it was held to, per rule.
  function evidenceCells(r) {
    const e = r.evidence;
    const q = e.quantile ? " p" + Math.round(e.quantile * 100) : "";
    const against = r.rule === "sla"
      ? fmtValue(e.threshold, e.unit) + " limit"
      : fmtValue(e.baseline_value, e.unit) + (r.baseline_version ? " on " + r.baseline_version : "");
    return [
      h("td", { class: "text" }, h("span", { class: "badge rule" }, r.rule)),
      h("td", { class: "bad" }, fmtValue(e.candidate_value, e.unit) + q),
      h("td", null, against),
      h("td", { class: "bad" }, "×" + (isFinite(e.ratio) ? e.ratio.toFixed(1) : "∞")),
      h("td", null, fmtInt(e.candidate_count) + (e.baseline_count ? " / " + fmtInt(e.baseline_count) : "")),
      h("td", null, fmtSci(e.p_value)),
      h("td", null, fmtSci(e.e_value)),
    ];
  }

  const EVIDENCE_HEAD = ["rule", "candidate", "held to", "ratio", "requests", "p-value", "e-value"];

  // Firing alerts, one card per endpoint and candidate, a row per rule.
  function renderActive(data) {
    const box = document.getElementById("active");
    const active = data.active.filter((r) => visible(r.service) &&
      (!state.selection.service || r.service === state.selection.service));
    if (!active.length) {
      box.replaceChildren(h("div", { class: "calm-banner" }, "No regression is firing."));
      return;
    }
    const groups = new Map();
    for (const r of active) {
      const k = regressionKey(r);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(r);
    }
    const order = { sla: 0, relative: 1, errors: 2, fanout: 3 };
    box.replaceChildren(...[...groups.values()].map((rules) => {
      rules.sort((a, b) => (order[a.rule] ?? 9) - (order[b.rule] ?? 9));
      const r = rules[0];
      const since = Math.min(...rules.map((x) => x.fired_unix_ms));
      return h("article", { class: "alert-group", data: { service: r.service, endpoint: r.endpoint, candidate: r.candidate_version } },
        h("div", { class: "head" },
          h("span", { class: "badge firing" }, "firing"),
          h("span", { class: "where" }, r.endpoint),
          h("span", { class: "service" }, r.service + extras(r)),
          h("span", { class: "version" }, swatch(colorOf(r.candidate_version)), r.candidate_version),
          r.baseline_version ? h("span", { class: "vs" }, "vs " + r.baseline_version) : null,
          h("span", { class: "since" }, "since " + clock(since) + " · " + ago(since, data.now_unix_ms))),
        h("table", { class: "evidence" },
          h("thead", null, h("tr", null, EVIDENCE_HEAD.map((c, i) => h("th", { class: i === 0 ? "text" : "" }, c)))),
          h("tbody", null, rules.flatMap((x) => [
            h("tr", {
              class: "regression firing",
              data: { rule: x.rule, candidate: x.candidate_version, baseline: x.baseline_version, endpoint: x.endpoint, service: x.service },
            }, evidenceCells(x)),
            h("tr", { class: "detail-row" }, h("td", { class: "text detail", colspan: EVIDENCE_HEAD.length }, x.evidence.detail)),
          ]))));
    }));
  }

  function renderEndpoints(data, width) {
    const box = document.getElementById("endpoints");
    renderSelection(data);
    if (!data.endpoints.length) {
      box.replaceChildren(h("p", { class: "empty" }, "No requests seen yet. Send OTLP spans to the collector's gRPC port."));
      return;
    }
    const sel = state.selection;
    const shown = data.endpoints.filter((ep) =>
      (sel.service ? ep.service === sel.service : data.endpoints.length <= CHART_ALL_UP_TO && visible(ep.service)) &&
      (!sel.endpoint || ep.endpoint === sel.endpoint));
    if (!shown.length) {
      box.replaceChildren(h("p", { class: "empty" }, sel.service
        ? "Nothing charted for this selection (yet)."
        : "Select a service above to chart its endpoints."));
      return;
    }
    const firing = new Map();
    for (const r of data.active) {
      const k = regressionKey(r);
      if (!firing.has(k)) firing.set(k, []);
      firing.get(k).push(r.rule);
    }
    const t1 = data.now_unix_ms;
    const t0 = t1 - data.interval_ms * data.points_limit;
    let first = t1;
    for (const ep of data.endpoints) for (const v of ep.versions) if (v.points.length) first = Math.min(first, v.points[0].unix_ms);
    // Zoom to the data while the ring is not full yet (20 points at least).
    const start = Math.max(t0, Math.min(first, t1 - 20 * data.interval_ms));
    const q = state.quantile;
    const sla = data.sla && "p" + Math.round(data.sla.quantile * 100) + "_ms" === q ? data.sla : null;

    box.replaceChildren(...shown.map((ep) => {
      const versions = ep.versions;
      for (const v of versions) colorOf(v.version);
      const alerting = versions.some((v) => firing.has(regressionKey({ ...ep, candidate_version: v.version })));
      const latency = lineChart({
        width, height: 230, t0: start, t1, scale: state.scale, unit: "ms",
        label: qLabel(q) + " latency by version",
        ref: sla ? { value: sla.limit_ms, label: "SLA " + qLabel(q) + " " + fmtMs(sla.limit_ms) } : null,
        series: versions.map((v) => ({
          name: v.version, color: colorOf(v.version),
          width: sel.version && v.version === sel.version ? 3.5 : 2,
          points: v.points.map((p) => [p.unix_ms, p[q]]),
        })),
      });
      const traffic = lineChart({
        width, height: 120, t0: start, t1, scale: "linear", unit: "count",
        label: "requests and timeouts by version",
        series: versions.flatMap((v) => [
          { name: v.version + " requests", color: colorOf(v.version), width: 1.6, points: v.points.map((p) => [p.unix_ms, p.requests]) },
          { name: v.version + " timeouts", color: colorOf(v.version), width: 1.4, dash: "4 3", points: v.points.map((p) => [p.unix_ms, p.timeouts]) },
        ]),
      });
      const rows = versions.map((v) => {
        const p = v.points[v.points.length - 1] || { requests: 0, timeouts: 0, errors: 0 };
        const rules = firing.get(regressionKey({ ...ep, candidate_version: v.version })) || [];
        const status = v.is_baseline ? h("span", { class: "badge baseline" }, "baseline")
          : rules.length ? h("span", { class: "badge regressed", title: "firing: " + rules.join(", ") }, "regressed")
            : h("span", { class: "badge healthy" }, "ok");
        const slow = (val) => sla && val !== null && val > sla.limit_ms;
        return h("tr", { class: sel.version === v.version ? "selected" : null, data: { version: v.version } },
          h("td", null, h("span", { class: "version" }, swatch(colorOf(v.version)), v.version)),
          h("td", null, status),
          h("td", null, fmtInt(p.requests)),
          h("td", { class: p.timeouts ? "bad" : "" }, fmtInt(p.timeouts) + (p.requests ? " · " + fmtPct(p.timeouts, p.requests) : "")),
          h("td", null, fmtInt(p.errors)),
          h("td", null, fmtMs(p.p50_ms)),
          h("td", { class: slow(p.p95_ms) ? "bad" : "" }, fmtMs(p.p95_ms)),
          h("td", null, fmtMs(p.p99_ms)));
      });
      return h("article", { class: "endpoint" + (alerting ? " alerting" : ""), data: { service: ep.service, endpoint: ep.endpoint } },
        h("div", { class: "title" },
          h("span", { class: "path", title: "select this endpoint", data: { select: "endpoint" } }, ep.endpoint),
          h("span", { class: "service" }, ep.service + extras(ep)),
          h("span", { class: "badges" },
            ep.baseline_version ? h("span", { class: "badge baseline" }, "baseline " + ep.baseline_version) : null,
            alerting ? h("span", { class: "badge firing" }, "regression") : null)),
        h("div", { class: "legend" }, versions.map((v) =>
          h("span", { class: "item" }, swatch(colorOf(v.version)), v.version))),
        h("div", { class: "chart-title" }, h("span", null, qLabel(q) + " latency over the last " + duration(data.window_ms) + " window, " + state.scale + " scale")),
        latency,
        h("div", { class: "chart-title" }, h("span", null, "requests in window (solid) and timeouts (dashed)")),
        traffic,
        h("div", { class: "scroll" }, h("table", { class: "versions" },
          h("thead", null, h("tr", null, ["version", "status", "requests", "timeouts", "errors", "p50", "p95", "p99"]
            .map((c, i) => h("th", { class: i < 2 ? "text" : "" }, c)))),
          h("tbody", null, rows))));
    }));
  }

  function renderPast(data) {
    const box = document.getElementById("past");
    if (!data.resolved.length) {
      box.replaceChildren(h("p", { class: "empty" }, "None yet. A regression that fired and resolved is listed here with its evidence."));
      return;
    }
    box.replaceChildren(h("div", { class: "panel" }, h("table", null,
      h("thead", null, h("tr", null, ["resolved", "endpoint", "candidate", "rule", "fired for", "evidence", "resolution"]
        .map((c) => h("th", { class: "text" }, c)))),
      h("tbody", null, data.resolved.map((r) => h("tr", {
        class: "regression resolved",
        data: { rule: r.rule, candidate: r.candidate_version, baseline: r.baseline_version, endpoint: r.endpoint },
      },
      h("td", { class: "text" }, clock(r.resolved_unix_ms)),
      h("td", { class: "text" }, r.service + " " + r.endpoint),
      h("td", { class: "text" }, r.candidate_version + (r.baseline_version ? " vs " + r.baseline_version : "")),
      h("td", { class: "text" }, h("span", { class: "badge rule" }, r.rule)),
      h("td", { class: "text" }, duration(r.resolved_unix_ms - r.fired_unix_ms)),
      h("td", { class: "text" }, fmtValue(r.evidence.candidate_value, r.evidence.unit) +
        (r.rule === "sla" ? " over " + fmtValue(r.evidence.threshold, r.evidence.unit)
          : " vs " + fmtValue(r.evidence.baseline_value, r.evidence.unit)) + " — " + r.evidence.detail),
      h("td", { class: "text" }, r.resolution || "")))))));
  }

  // ---- the fleet: services by severity -----------------------------------

  // A service's severity: its worst firing alert, else `inconclusive` when a
  // candidate's verdict is not a pass yet (too little traffic, or a
  // regression not held long enough to fire), else `pass`.
  function fleet(data) {
    const services = new Map();
    const of = (name) => {
      if (!services.has(name)) {
        services.set(name, {
          name, severity: "pass", endpoints: new Set(), versions: new Set(), rules: new Set(),
          firing: new Set(), pending: new Set(), requests: 0, timeouts: 0, worst: null,
        });
      }
      return services.get(name);
    };
    for (const ep of data.endpoints) {
      const s = of(ep.service);
      s.endpoints.add(ep.endpoint);
      for (const v of ep.versions) {
        s.versions.add(v.version);
        const p = v.points[v.points.length - 1];
        if (!p) continue;
        s.requests += p.requests;
        s.timeouts += p.timeouts;
        const q = p[state.quantile];
        if (q !== null && (!s.worst || q > s.worst.value)) {
          s.worst = { value: q, version: v.version, endpoint: ep.endpoint };
        }
      }
    }
    const rank = (sev) => SEVERITIES.indexOf(sev);
    for (const v of data.verdicts || []) {
      const s = of(v.service);
      if (v.verdict !== "pass") {
        s.pending.add(v.candidate_version);
        if (rank("inconclusive") < rank(s.severity)) s.severity = "inconclusive";
      }
    }
    for (const r of data.active) {
      const s = of(r.service);
      s.firing.add(r.candidate_version);
      s.rules.add(r.rule);
      if (rank(r.severity) < rank(s.severity)) s.severity = r.severity;
    }
    // Regressions first, then by name.
    return [...services.values()].sort((a, b) =>
      rank(a.severity) - rank(b.severity) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  // Whether a service (its name, endpoints or versions) matches the search.
  function matches(service) {
    const q = state.search.trim().toLowerCase();
    if (!q) return true;
    if (service.name.toLowerCase().includes(q)) return true;
    for (const e of service.endpoints) if (e.toLowerCase().includes(q)) return true;
    for (const v of service.versions) if (v.toLowerCase().includes(q)) return true;
    return false;
  }
  let matching = new Set();
  const visible = (name) => !state.search.trim() || matching.has(name);

  function renderFleet(data) {
    const box = document.getElementById("services");
    const all = fleet(data);
    const shown = all.filter(matches);
    matching = new Set(shown.map((s) => s.name));
    if (!all.length) {
      box.replaceChildren(h("p", { class: "empty" }, "No service seen yet."));
      return;
    }
    if (!shown.length) {
      box.replaceChildren(h("p", { class: "empty" }, "No service matches “" + state.search + "”."));
      return;
    }
    const head = ["service", "severity", "endpoints", "versions", "firing", "requests in window", "timeouts", "worst " + qLabel(state.quantile)];
    box.replaceChildren(...SEVERITIES.map((sev) => {
      const rows = shown.filter((s) => s.severity === sev);
      if (!rows.length) return null;
      const listed = rows.slice(0, ROWS_PER_GROUP);
      return h("div", { class: "group", data: { severity: sev } },
        h("h3", null, h("span", { class: "badge sev-" + sev }, sev), fmtInt(rows.length) + (rows.length === 1 ? " service" : " services")),
        h("div", { class: "panel" }, h("table", null,
          h("thead", null, h("tr", null, head.map((c, i) => h("th", { class: i < 2 || i === 4 ? "text" : "" }, c)))),
          h("tbody", null, listed.map((s) => h("tr", {
            class: "service-row" + (s.name === state.selection.service ? " selected" : ""),
            data: { service: s.name, severity: s.severity },
          },
          h("td", { class: "text name" }, s.name),
          h("td", { class: "text" }, h("span", { class: "badge sev-" + s.severity }, s.severity)),
          h("td", null, fmtInt(s.endpoints.size)),
          h("td", null, fmtInt(s.versions.size)),
          h("td", { class: "text" }, s.firing.size
            ? [...s.firing].sort().join(", ") + " · " + [...s.rules].sort().join(", ")
            : s.pending.size ? "not yet: " + [...s.pending].sort().join(", ") : "–"),
          h("td", null, fmtInt(s.requests)),
          h("td", { class: s.timeouts ? "bad" : "" }, fmtInt(s.timeouts)),
          h("td", null, s.worst ? fmtMs(s.worst.value) + " " + s.worst.version : "–")))))),
        rows.length > listed.length
          ? h("div", { class: "more" }, fmtInt(rows.length - listed.length) + " more: narrow the search")
          : null);
    }));
  }

  function renderSelection(data) {
    const sel = state.selection;
    const box = document.getElementById("selection");
    if (!sel.service) {
      box.replaceChildren(data.endpoints.length > CHART_ALL_UP_TO
        ? "Click a service to chart its endpoints; the address then links to it." : "");
      return;
    }
    const part = (label, value, clear) => value
      ? [label + " ", h("code", null, value), " (", h("a", { data: { clear } }, "clear"), ") "]
      : [];
    box.replaceChildren(...part("service", sel.service, "service"),
      ...part("endpoint", sel.endpoint, "endpoint"), ...part("version", sel.version, "version"));
  }

  // ---- the address: selection and search ---------------------------------

  function readAddress() {
    const p = new URLSearchParams(location.search);
    state.selection = {
      service: p.get("service") || "",
      endpoint: p.get("endpoint") || "",
      version: p.get("version") || "",
    };
    state.search = p.get("q") || "";
    document.getElementById("search").value = state.search;
  }

  // `push`: a new history entry (a click); else the current one is
  // replaced (typing in the search box).
  function writeAddress(push) {
    const p = new URLSearchParams();
    for (const k of ["service", "endpoint", "version"]) if (state.selection[k]) p.set(k, state.selection[k]);
    if (state.search) p.set("q", state.search);
    const query = p.toString();
    const url = location.pathname + (query ? "?" + query : "") + location.hash;
    if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
  }

  function select(selection) {
    state.selection = { service: "", endpoint: "", version: "", ...selection };
    writeAddress(true);
    render();
  }

  function chartWidth() {
    const box = document.getElementById("endpoints");
    const n = Math.max(1, Math.floor((box.clientWidth + 14) / (640 + 14)));
    return Math.max(480, Math.floor((box.clientWidth - 14 * (n - 1)) / n) - 34);
  }

  function render() {
    const data = state.data;
    if (!data) return;
    const started = performance.now();
    const names = new Set();
    for (const ep of data.endpoints) for (const v of ep.versions) names.add(v.version);
    for (const r of data.active.concat(data.resolved)) names.add(r.candidate_version);
    for (const v of [...names].sort()) colorOf(v);
    renderSummary(data);
    renderFleet(data);
    renderActive(data);
    renderEndpoints(data, chartWidth());
    renderPast(data);
    document.getElementById("footer").textContent =
      "One point per " + duration(data.interval_ms) + ", " + fmtInt(data.points_limit) +
      " points per series kept on the collector" +
      (data.untracked_series ? "; " + fmtInt(data.untracked_series) + " series not charted (admin.history_series reached)" : "") +
      ". Each point summarizes the version's last " + duration(data.window_ms) + ", as the judge sees it.";
    // Read by the browser test (and anyone profiling): how long drawing took.
    performance.measure("modelgate-render", { start: started, end: performance.now() });
  }

  function setStatus(text, cls) {
    const el = document.getElementById("status");
    el.textContent = text;
    el.className = "status " + cls;
  }

  // With auth.token set, open the page as /#token=<token>: the fragment
  // never leaves the browser, and the token goes along as a bearer header.
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  const headers = token ? { Authorization: "Bearer " + token } : {};

  // The newest point held: a refresh asks only for what came after it.
  function newestPoint(data) {
    let newest = 0;
    for (const ep of data.endpoints) for (const v of ep.versions) {
      const p = v.points[v.points.length - 1];
      if (p && p.unix_ms > newest) newest = p.unix_ms;
    }
    return newest;
  }

  // `update` holds the points after `since` only: append them to what is
  // held, keep at most `points_limit` per series, and drop the series the
  // collector no longer lists.
  function merge(held, update) {
    const key = (ep) =>
      [ep.service, ep.endpoint, ep.phase, ep.input_tokens || "", ...ep.dims].join("\u0000");
    const old = new Map(held.endpoints.map((ep) => [key(ep), ep]));
    for (const ep of update.endpoints) {
      const before = old.get(key(ep));
      if (!before) continue;
      const versions = new Map(before.versions.map((v) => [v.version, v]));
      for (const v of ep.versions) {
        const mine = versions.get(v.version);
        if (!mine) continue;
        const last = mine.points.length ? mine.points[mine.points.length - 1].unix_ms : 0;
        const points = mine.points.concat(v.points.filter((p) => p.unix_ms > last));
        v.points = points.slice(Math.max(0, points.length - update.points_limit));
      }
    }
    return update;
  }

  async function refresh() {
    const held = state.data;
    const since = held ? newestPoint(held) : 0;
    const url = "/api/v1/history" + (since ? "?since=" + since : "");
    try {
      const response = await fetch(url, { cache: "no-store", headers });
      if (response.status === 401) {
        setStatus("this collector needs a token: open the page as /#token=<token>", "down");
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      const update = await response.json();
      // A collector whose clock is behind the points held (another instance
      // behind the same address, a clock stepped back) would never send a
      // point after ours: start over with its whole history next time.
      if (since && update.now_unix_ms < since) {
        state.data = null;
        return;
      }
      state.data = since ? merge(held, update) : update;
      render();
      setStatus("updated " + clock(state.data.now_unix_ms), "live");
    } catch (e) {
      setStatus("collector unreachable, retrying", "down");
    }
  }

  function segmented(id, attr, key) {
    const group = document.getElementById(id);
    group.addEventListener("click", (ev) => {
      const b = ev.target.closest("button");
      if (!b) return;
      for (const o of group.querySelectorAll("button")) o.classList.toggle("on", o === b);
      state[key] = b.dataset[attr];
      render();
    });
  }

  segmented("quantile", "q", "quantile");
  segmented("scale", "scale", "scale");
  document.getElementById("search").addEventListener("input", (ev) => {
    state.search = ev.target.value;
    writeAddress(false);
    render();
  });
  // Clicks: a service row selects the service, an endpoint's title the
  // endpoint, a version's row the version; "clear" drops a part.
  document.addEventListener("click", (ev) => {
    const row = ev.target.closest("tr.service-row");
    if (row) {
      select({ service: row.dataset.service });
      return;
    }
    const clear = ev.target.closest("a[data-clear]");
    if (clear) {
      const sel = { ...state.selection };
      const part = clear.dataset.clear;
      // The narrower parts go with the wider one.
      for (const k of ["service", "endpoint", "version"].slice(["service", "endpoint", "version"].indexOf(part))) sel[k] = "";
      select(sel);
      return;
    }
    const article = ev.target.closest("article.endpoint");
    if (!article) return;
    const version = ev.target.closest("table.versions tr[data-version]");
    if (version) {
      select({ service: article.dataset.service, endpoint: article.dataset.endpoint, version: version.dataset.version });
    } else if (ev.target.closest("[data-select=endpoint]")) {
      select({ service: article.dataset.service, endpoint: article.dataset.endpoint });
    }
  });
  window.addEventListener("popstate", () => {
    readAddress();
    render();
  });
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(render, 150);
  });
  readAddress();
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
