// claudeflare dashboard: vanilla JavaScript, no framework, no build step.
// Every number comes from this daemon's admin API (/api/...), fetched with
// the client key the user typed in (sessionStorage, sent as x-api-key).
// The DOM is built with createElement and textContent only: nothing the
// API returns is ever parsed as HTML.
"use strict";

(function () {
  const KEY_STORE = "claudeflare.key";
  const POLL_MS = 5000; // accounts, status, recent requests
  const SLOW_MS = 30000; // charts, cost and keys: aggregates over the whole period
  const SVG = "http://www.w3.org/2000/svg";

  const state = {
    key: sessionStorage.getItem(KEY_STORE) || "",
    period: "24h",
    paused: false,
    busy: false,
    timer: 0,
    accounts: [],
    requests: [],
    models: new Set(),
    authed: false,
    slowAt: 0, // when the charts were last fetched
    cache: {},
  };

  const $ = (id) => document.getElementById(id);

  // ---- small DOM helpers -------------------------------------------------

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }

  function svg(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null) continue;
      if (k === "text") e.textContent = v;
      else e.setAttribute(k, String(v));
    }
    for (const k of kids) if (k) e.append(k);
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.firstChild.remove();
  }

  // ---- formatting --------------------------------------------------------

  function pct(u) {
    if (u === null || u === undefined || !isFinite(u)) return "–";
    return Math.round(u * 100) + "%";
  }

  function usd(v) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "$0";
    if (Math.abs(v) < 0.01) return "$" + v.toFixed(4);
    if (Math.abs(v) < 1) return "$" + v.toFixed(3);
    if (Math.abs(v) < 100) return "$" + v.toFixed(2);
    return "$" + Math.round(v).toLocaleString("en-US");
  }

  function num(n) {
    if (n === null || n === undefined) return "–";
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (n / 1e3).toFixed(0) + "k";
    if (a >= 1e3) return (n / 1e3).toFixed(1) + "k";
    return String(Math.round(n));
  }

  function ms(v) {
    if (v === null || v === undefined) return "–";
    if (v >= 10000) return (v / 1000).toFixed(0) + " s";
    if (v >= 1000) return (v / 1000).toFixed(1) + " s";
    if (v > 0 && v < 10) return (Math.round(v * 10) / 10) + " ms";
    return Math.round(v) + " ms";
  }

  // countdown: "2h 05m", "3d 4h", "45s"; "now" when past.
  function countdown(t) {
    const s = Math.round((t - Date.now()) / 1000);
    if (s <= 0) return "now";
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + String(m).padStart(2, "0") + "m";
    if (m > 0) return m + "m " + String(sec).padStart(2, "0") + "s";
    return sec + "s";
  }

  function clock(t) {
    return new Date(t).toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function parseTime(s) {
    if (!s) return null;
    const t = Date.parse(s);
    return isNaN(t) ? null : t;
  }

  // ---- API ---------------------------------------------------------------

  class HTTPError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path) {
    const headers = { Accept: "application/json" };
    if (state.key) headers["x-api-key"] = state.key;
    const r = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
    if (!r.ok) {
      let msg = r.status + " " + r.statusText;
      try {
        const body = await r.json();
        if (body && body.error && body.error.message) msg = body.error.message;
      } catch (e) { /* not JSON */ }
      throw new HTTPError(r.status, msg);
    }
    return r.json();
  }

  // optional: a route that may not exist on this daemon (older build) or
  // that this key may not read answers null instead of failing the page.
  async function optional(path) {
    try {
      return await api(path);
    } catch (e) {
      if (e instanceof HTTPError && (e.status === 404 || e.status === 403 || e.status === 400 || e.status === 503)) return null;
      throw e;
    }
  }

  function stepFor(period) {
    return { "1h": "2m", "6h": "10m", "24h": "30m", "7d": "6h", "30d": "1d" }[period] || "30m";
  }

  // announce tells a screen reader what changed, once: the "Updated"
  // line itself is not a live region, it changes every few seconds.
  function announce(text) {
    $("announce").textContent = text;
  }

  // ---- key prompt --------------------------------------------------------

  function showLogin(why) {
    state.authed = false;
    $("dash").hidden = true;
    $("login").hidden = false;
    $("forget").hidden = !state.key;
    if (why) $("login-why").textContent = why;
    $("live").textContent = "Waiting for a client key";
    announce(why || "A client key is needed.");
    $("key").focus();
  }

  function showDash() {
    state.authed = true;
    $("login").hidden = true;
    $("dash").hidden = false;
    $("forget").hidden = !state.key;
  }

  // ---- accounts ----------------------------------------------------------

  const STATE_TEXT = {
    ok: "ok",
    paused: "paused",
    needs_login: "needs login",
    key_refused: "key refused",
    quarantined: "quarantined",
    limited: "rate limited",
    limited_model: "model limited",
    refresh_blocked: "refresh blocked",
  };

  function bar(label, u, reset, extraClass) {
    const v = u === null || u === undefined ? null : Math.max(0, Math.min(1, u));
    const fill = el("span", { class: "fill" });
    if (v !== null) fill.style.width = (v * 100).toFixed(1) + "%";
    let level = "low";
    if (v !== null && v >= 0.9) level = "high";
    else if (v !== null && v >= 0.7) level = "mid";
    const track = el("span", {
      class: "track " + level + (extraClass ? " " + extraClass : ""),
      role: "meter",
      "aria-valuemin": "0",
      "aria-valuemax": "100",
      "aria-valuenow": v === null ? null : String(Math.round(v * 100)),
      "aria-valuetext": v === null ? "unknown" : pct(v),
      "aria-label": label + " utilization",
    }, fill);
    const resetEl = el("span", { class: "reset" });
    if (reset) {
      resetEl.dataset.reset = String(reset);
      resetEl.title = "resets " + clock(reset);
      resetEl.textContent = "resets in " + countdown(reset);
    } else {
      resetEl.textContent = "reset unknown";
    }
    return el("div", { class: "meter", "data-window": label },
      el("span", { class: "wlabel", text: label }),
      track,
      el("span", { class: "pct", text: pct(v) }),
      resetEl);
  }

  function accountCard(a) {
    const word = a.status || "ok";
    const badge = el("span", { class: "badge s-" + word, text: STATE_TEXT[word] || word });
    const head = el("div", { class: "card-head" },
      el("h3", { text: a.name }),
      badge);
    const meta = [a.kind, a.mode].filter(Boolean).join(" · ");
    const card = el("article", { class: "card", "data-account": a.name, "aria-label": "account " + a.name },
      head,
      el("p", { class: "fine", text: meta + (a.priority !== undefined ? " · priority " + a.priority : "") }));
    const why = [];
    if (a.until) {
      const u = parseTime(a.until);
      const what = word === "limited" && a.window ? a.window + " limit" : word === "limited_model" && a.family ? a.family + " limit" : STATE_TEXT[word] || word;
      if (u) {
        const s = el("span", { class: "until", text: what + " until " + clock(u) + " (" + countdown(u) + ")" });
        s.dataset.until = String(u);
        s.dataset.what = what;
        why.push(s);
      }
    }
    if (a.status_reason) why.push(el("span", { text: a.status_reason }));
    if (word === "needs_login") why.push(el("span", { text: "log in again: claudeflare accounts login " + a.name }));
    if (why.length) {
      const p = el("p", { class: "reason" });
      why.forEach((w, i) => { if (i) p.append(" — "); p.append(w); });
      card.append(p);
    }
    card.append(bar("5h", a.utilization_5h, parseTime(a.reset_5h), "u5h"));
    card.append(bar("7d", a.utilization_7d, parseTime(a.reset_7d), "u7d"));
    const facts = el("dl", { class: "facts" });
    const fact = (k, v) => facts.append(el("dt", { text: k }), el("dd", { text: v }));
    fact("sessions", a.sessions === undefined || a.sessions === null ? "–" : String(a.sessions));
    if (typeof a.time_to_limit_seconds === "number") fact("limit at this rate", "in " + countdown(Date.now() + a.time_to_limit_seconds * 1000));
    fact("requests", num(a.period_requests !== undefined ? a.period_requests : a.requests));
    if (a.period_errors) fact("errors", num(a.period_errors));
    if (a.cost_usd !== undefined) fact("cost", usd(a.cost_usd));
    fact("last used", a.last_used ? clock(parseTime(a.last_used)) : "never");
    card.append(facts);
    return card;
  }

  // mergeAccounts joins /api/accounts, the per-account lines of /api/stats
  // and, when this daemon has it, /api/status.
  function mergeAccounts(accts, stats, status) {
    const byName = new Map();
    for (const a of (accts && accts.accounts) || []) byName.set(a.name, Object.assign({}, a));
    for (const s of (stats && stats.accounts) || []) {
      if (!s.account) continue;
      const a = byName.get(s.account);
      if (!a) continue;
      a.reset_5h = s.reset_5h;
      a.reset_7d = s.reset_7d;
      a.period_requests = s.requests;
      a.period_errors = s.errors;
      if ("cost_usd" in s) a.cost_usd = s.cost_usd;
      if (a.utilization_5h === undefined || a.utilization_5h === null) a.utilization_5h = s.utilization_5h;
      if (a.utilization_7d === undefined || a.utilization_7d === null) a.utilization_7d = s.utilization_7d;
    }
    // /api/status is the authority on utilization and resets (a window
    // whose reset passed reads 0 there), states and sessions.
    const list = (status && status.accounts) || [];
    for (const s of Array.isArray(list) ? list : []) {
      const a = byName.get(s.name);
      if (!a) continue;
      for (const k of ["utilization_5h", "utilization_7d", "reset_5h", "reset_7d", "until", "window", "family", "sessions", "time_to_limit_seconds"]) {
        if (k in s) a[k] = s[k];
      }
      if (s.state) a.status = s.state;
      if ("reason" in s) a.status_reason = s.reason;
    }
    return Array.from(byName.values());
  }

  function renderAccounts(list, stats, status) {
    const box = $("accounts");
    clear(box);
    if (!list.length) {
      box.append(el("p", { class: "fine", text: "No accounts yet: add one with `claudeflare accounts add NAME`." }));
    }
    for (const a of list) box.append(accountCard(a));
    const pool = stats && stats.pool;
    const parts = [];
    if (pool && pool.accounts !== undefined) parts.push(pool.available + " of " + pool.accounts + " accounts available");
    const sp = status && status.pool;
    if (sp) {
      parts.length = 0;
      parts.push(sp.usable + " of " + sp.total + " accounts usable");
      const t = parseTime(sp.exhausted_at);
      if (sp.estimate === "exhausted") parts.push("pool exhausted now");
      else if (sp.estimate === "rate" && t) parts.push("at the current rate the pool is exhausted in " + countdown(t) + " (" + clock(t) + ")");
      else if (sp.estimate === "no_traffic") parts.push("no recent traffic to estimate exhaustion");
      else if (sp.estimate === "not_within_7d") parts.push("not exhausted within 7 days at the current rate");
      if (sp.tokens_per_minute) parts.push(num(sp.tokens_per_minute) + " tokens/min");
      $("pool").title = sp.method || "";
    }
    $("pool").textContent = parts.join(" · ");
  }

  // ---- charts (inline SVG) -----------------------------------------------

  // Charts are drawn at their box's width, one SVG unit a CSS pixel, so
  // their text stays readable; the next refresh redraws after a resize.
  const H = 170, PAD_L = 52, PAD_R = 8, PAD_T = 10, PAD_B = 24;
  const widthOf = (plot) => Math.max(240, Math.floor(plot.clientWidth || 480));

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function tickLabel(t, spanMs) {
    const d = new Date(t);
    if (spanMs > 3 * 86400000) return d.toLocaleDateString(undefined, { month: "short", day: "numeric" });
    return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  }

  // timeChart draws series over buckets: kind "bar" (stacked from zero,
  // drawn in order, so draw the larger first) or "line".
  function timeChart(fig, times, series, fmt, title) {
    const plot = fig.querySelector(".plot");
    const W = widthOf(plot);
    clear(plot);
    const n = times.length;
    const max = niceMax(Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v !== null))));
    const iw = W - PAD_L - PAD_R, ih = H - PAD_T - PAD_B;
    const x = (i) => PAD_L + (n ? (i * iw) / n : 0);
    const y = (v) => PAD_T + ih - (v / max) * ih;
    const root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img", class: "svgchart", preserveAspectRatio: "xMidYMid meet" });
    const desc = series.map((s) => s.name + " total " + fmt(s.values.reduce((a, v) => a + (v || 0), 0))).join(", ");
    root.append(svg("title", { text: title + ": " + desc }));
    for (const f of [0, 0.5, 1]) {
      const yy = y(max * f);
      root.append(svg("line", { x1: PAD_L, x2: W - PAD_R, y1: yy, y2: yy, class: "grid" }));
      root.append(svg("text", { x: PAD_L - 4, y: yy + 4, class: "axis", "text-anchor": "end", text: fmt(max * f) }));
    }
    if (n) {
      const span = times[n - 1] - times[0];
      const every = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(iw / 70))));
      for (let i = 0; i < n; i += every) {
        root.append(svg("text", { x: x(i) + iw / n / 2, y: H - 6, class: "axis", "text-anchor": "middle", text: tickLabel(times[i], span) }));
      }
    }
    const bw = n ? Math.max(1, iw / n - 1) : 0;
    for (const s of series) {
      if (s.kind === "line") {
        let d = "";
        s.values.forEach((v, i) => {
          if (v === null) return;
          d += (d ? " L" : "M") + (x(i) + iw / n / 2).toFixed(1) + " " + y(v).toFixed(1);
        });
        if (d) root.append(svg("path", { d, class: "line " + s.cls }));
      } else {
        s.values.forEach((v, i) => {
          if (!v) return;
          const r = svg("rect", { x: x(i).toFixed(1), y: y(v).toFixed(1), width: bw.toFixed(1), height: (y(0) - y(v)).toFixed(1), class: "bar " + s.cls });
          r.append(svg("title", { text: tickLabel(times[i], 0) + " " + s.name + ": " + fmt(v) }));
          root.append(r);
        });
      }
    }
    plot.append(root);
    const legend = el("p", { class: "legend" });
    for (const s of series) legend.append(el("span", { class: "key " + s.cls, text: s.name }));
    plot.append(legend);
  }

  // barList draws horizontal bars, one per [label, value].
  function barList(fig, rows, fmt, empty) {
    const plot = fig.querySelector(".plot");
    const W = widthOf(plot);
    clear(plot);
    if (!rows.length) {
      plot.append(el("p", { class: "fine", text: empty }));
      return;
    }
    const max = Math.max(...rows.map((r) => r[1] || 0)) || 1;
    const lh = 22, lw = Math.min(170, Math.floor(W * 0.4)), h = rows.length * lh + 4;
    const root = svg("svg", { viewBox: "0 0 " + W + " " + h, role: "img", class: "svgchart bars" });
    root.append(svg("title", { text: rows.map((r) => r[0] + " " + fmt(r[1])).join(", ") }));
    rows.forEach((r, i) => {
      const yy = i * lh + 2;
      const fit = Math.max(6, Math.floor(lw / 7));
      const label = r[0].length > fit ? r[0].slice(0, fit - 1) + "…" : r[0];
      const lt = svg("text", { x: 0, y: yy + 15, class: "axis label", text: label });
      lt.append(svg("title", { text: r[0] }));
      root.append(lt);
      const w = ((r[1] || 0) / max) * (W - lw - 70);
      root.append(svg("rect", { x: lw, y: yy + 3, width: Math.max(r[1] ? 1 : 0, w).toFixed(1), height: lh - 8, class: "bar cost" }));
      root.append(svg("text", { x: lw + w + 6, y: yy + 15, class: "axis", text: fmt(r[1]) }));
    });
    plot.append(root);
  }

  function renderSeries(series) {
    if (!series) return;
    const b = series.buckets || [];
    const times = b.map((x) => parseTime(x.start));
    const sum = (k) => b.reduce((a, x) => a + (x[k] || 0), 0);
    $("traffic-sub").textContent = "· " + num(sum("requests")) + " requests, " + num(sum("errors")) + " errors, step " + (series.step || "");
    timeChart($("chart-requests"), times, [
      { name: "requests", cls: "req", values: b.map((x) => x.requests) },
      { name: "errors", cls: "err", values: b.map((x) => x.errors) },
    ], num, "Requests and errors");
    timeChart($("chart-latency"), times, [
      { name: "p95", cls: "p95", kind: "line", values: b.map((x) => (x.requests ? x.p95_ms : null)) },
      { name: "p50", cls: "p50", kind: "line", values: b.map((x) => (x.requests ? x.p50_ms : null)) },
    ], ms, "Latency");
    timeChart($("chart-tokens"), times, [
      { name: "input+cache", cls: "tin", values: b.map((x) => (x.input_tokens || 0) + (x.cache_read_input_tokens || 0) + (x.cache_creation_input_tokens || 0) + (x.output_tokens || 0)) },
      { name: "output", cls: "tout", values: b.map((x) => x.output_tokens) },
    ], num, "Tokens");
    timeChart($("chart-cost"), times, [
      { name: "cost (API-equivalent)", cls: "cost", values: b.map((x) => x.cost_usd) },
    ], usd, "Cost");
  }

  function groupRows(g, keyName) {
    if (!g || !g.groups) return [];
    return g.groups.filter((x) => x.cost_usd || x.requests).map((x) => [x.key === null ? "(" + keyName + ")" : x.key, x.cost_usd || 0]);
  }

  function renderCost(byDay, byModel, byAccount, byClient, series) {
    if (byDay && byDay.groups) {
      const times = byDay.groups.map((x) => parseTime(x.key));
      timeChart($("cost-day"), times, [{ name: "cost per day", cls: "cost", values: byDay.groups.map((x) => x.cost_usd) }], usd, "Cost by day");
    } else if (series) {
      barList($("cost-day"), [], usd, "Cost by day needs a daemon with `stats --by day`.");
    }
    barList($("cost-model"), groupRows(byModel, "no model"), usd, "No cost in this period.");
    barList($("cost-account"), groupRows(byAccount, "no account"), usd, "No cost in this period.");
    barList($("cost-client"), groupRows(byClient, "no client key"), usd, "No cost in this period.");
    const total = (byModel && byModel.total) || (byDay && byDay.total);
    const sub = [];
    if (total) {
      sub.push("· " + usd(total.cost_usd) + " in " + ($("period").selectedOptions[0] || {}).textContent);
      if (total.unpriced_requests) sub.push(total.unpriced_requests + " requests without a price");
    }
    $("cost-sub").textContent = sub.join(", ");
  }

  // ---- requests ------------------------------------------------------------

  function statusClass(s) {
    if (!s) return "s-none";
    if (s === 429) return "s-429";
    return "s-" + Math.floor(s / 100) + "xx";
  }

  function renderRequests(reqs) {
    const tbody = $("requests").querySelector("tbody");
    clear(tbody);
    const model = $("f-model").value;
    const rows = reqs.filter((r) => !model || r.model === model).reverse().slice(0, Number($("f-rows").value) || 25);
    $("requests-empty").hidden = rows.length > 0;
    for (const r of rows) {
      const t = parseTime(r.timestamp);
      const btn = el("button", { type: "button", class: "link", "data-id": r.id, "aria-label": "payload of request " + r.id, text: "payload" });
      btn.addEventListener("click", () => openPayload(r.id));
      tbody.append(el("tr", { "data-request": r.id },
        el("td", { title: r.timestamp }, el("time", { datetime: r.timestamp, text: clock(t) })),
        el("td", { text: r.account || "–" }),
        el("td", { text: r.model || "–" }),
        el("td", {}, el("span", { class: "status " + statusClass(r.status), text: r.status ? String(r.status) : r.end_state || "–" })),
        el("td", { class: "num", text: ms(r.duration_ms) }),
        el("td", { class: "num", text: num(r.input_tokens + r.cache_read_input_tokens + r.cache_creation_input_tokens) + " / " + num(r.output_tokens) }),
        el("td", { class: "num", text: r.cost_usd === undefined ? "–" : usd(r.cost_usd) }),
        el("td", { text: r.client || "–" }),
        el("td", {}, btn)));
    }
  }

  function fillSelect(sel, values) {
    const cur = sel.value;
    const have = new Set(Array.from(sel.options).map((o) => o.value));
    for (const v of values) if (v && !have.has(v)) sel.append(el("option", { value: v, text: v }));
    sel.value = cur;
  }

  function closePayload() {
    if ($("payload").hidden) return;
    $("payload").hidden = true;
    if (state.payloadFrom && state.payloadFrom.isConnected) state.payloadFrom.focus();
  }

  async function openPayload(id) {
    state.payloadFrom = document.activeElement;
    const box = $("payload"), pre = $("payload-body");
    box.hidden = false;
    $("payload-h").textContent = "Payload of " + id;
    pre.textContent = "Loading…";
    box.focus();
    try {
      const p = await api("/api/requests/" + encodeURIComponent(id) + "/payload");
      pre.textContent = JSON.stringify(p, null, 2);
    } catch (e) {
      if (e instanceof HTTPError && e.status === 403) pre.textContent = "Payloads need an admin key: " + e.message;
      else pre.textContent = "Could not load the payload: " + e.message;
    }
  }

  // ---- client keys and budgets ---------------------------------------------

  function renderKeys(keys) {
    const box = $("keys");
    const sec = $("keys-section");
    const list = (keys && keys.keys) || [];
    sec.hidden = list.length === 0;
    clear(box);
    for (const k of list) {
      const card = el("article", { class: "card", "data-key": k.name, "aria-label": "client key " + k.name },
        el("div", { class: "card-head" }, el("h3", { text: k.name }), el("span", { class: "badge", text: k.role })));
      const budgets = k.budgets || [];
      if (!budgets.length) card.append(el("p", { class: "fine", text: "no budget" }));
      for (const b of budgets) {
        const fmt = b.unit === "usd" ? usd : num;
        const u = b.amount > 0 ? b.used / b.amount : null;
        const m = bar(b.period, u, parseTime(b.resets_at), b.exceeded ? "over" : "");
        m.querySelector(".pct").textContent = pct(u);
        card.append(m, el("p", { class: "fine", text: fmt(b.used) + " of " + fmt(b.amount) + " " + (b.unit === "usd" ? "(API-equivalent)" : "tokens") + " per " + b.period + (b.exceeded ? " — over budget: requests get 429" : "") }));
      }
      box.append(card);
    }
  }

  // ---- refresh -------------------------------------------------------------

  function requestsQuery() {
    const q = new URLSearchParams({ limit: "100" });
    if ($("f-account").value) q.set("account", $("f-account").value);
    if ($("f-status").value) q.set("status", $("f-status").value);
    return "/api/requests?" + q.toString();
  }

  // refresh fetches what changes by the second every time, and the
  // aggregates behind the charts every SLOW_MS (or when forced: a new
  // period, a new key), so an open tab costs the daemon little.
  async function refresh(force) {
    if (state.busy) return;
    state.busy = true;
    const p = encodeURIComponent(state.period);
    try {
      const accts = await api("/api/accounts");
      const wasShown = state.authed;
      showDash();
      const slowDue = force || !wasShown || Date.now() - state.slowAt >= SLOW_MS;
      const fast = Promise.all([optional("/api/status"), optional(requestsQuery())]);
      const slow = slowDue ? Promise.all([
        optional("/api/stats?by=account&since=" + p),
        optional("/api/series?since=" + p + "&step=" + stepFor(state.period)),
        optional("/api/stats?by=day&since=" + (state.period === "30d" ? "30d" : "7d")),
        optional("/api/stats?by=model&since=" + p),
        optional("/api/stats?by=client&since=" + p),
        optional("/api/keys"),
      ]) : null;
      const [status, reqs] = await fast;
      if (slow) {
        const [stats, series, byDay, byModel, byClient, keys] = await slow;
        state.cache = { stats, series, byDay, byModel, byClient, keys };
        state.slowAt = Date.now();
      }
      const { stats, series, byDay, byModel, byClient, keys } = state.cache;
      state.accounts = mergeAccounts(accts, stats, status);
      renderAccounts(state.accounts, stats, status);
      if (slow) {
        renderSeries(series);
        const byAccount = stats && stats.groups ? stats : stats ? { groups: (stats.accounts || []).map((a) => ({ key: a.account, cost_usd: a.cost_usd, requests: a.requests })) } : null;
        renderCost(byDay, byModel, byAccount, byClient, series);
        renderKeys(keys);
      }
      fillSelect($("f-account"), state.accounts.map((a) => a.name));
      if (reqs) {
        state.requests = reqs.requests || [];
        for (const r of state.requests) if (r.model) state.models.add(r.model);
        fillSelect($("f-model"), Array.from(state.models).sort());
        $("requests-empty").textContent = "No request matches.";
        renderRequests(state.requests);
      } else {
        renderRequests([]);
        $("requests-empty").textContent = "This key may not read the request log (logs.view).";
      }
      $("live").textContent = "Updated " + new Date().toLocaleTimeString() + (state.paused ? " · paused" : " · live, every " + POLL_MS / 1000 + " s");
      $("live").classList.remove("error");
      if (state.failed) announce("Updates resumed.");
      state.failed = false;
    } catch (e) {
      if (e instanceof HTTPError && e.status === 401) {
        showLogin(state.key ? "That key was not accepted. Enter a client key with the viewer role." : null);
      } else if (e instanceof HTTPError && e.status === 403) {
        showLogin(state.key ? "This key may not view the dashboard (" + e.message + "). Use a viewer or admin key." : e.message);
      } else {
        $("live").textContent = "Update failed: " + e.message;
        $("live").classList.add("error");
        if (!state.failed) announce("Dashboard update failed: " + e.message);
        state.failed = true;
      }
    } finally {
      state.busy = false;
    }
  }

  function schedule() {
    clearTimeout(state.timer);
    if (state.paused) return;
    state.timer = setTimeout(async () => {
      if (!document.hidden && state.authed) await refresh();
      schedule();
    }, POLL_MS);
  }

  // tick redraws the countdowns every second, between refreshes.
  function tick() {
    for (const e of document.querySelectorAll("[data-reset]")) {
      e.textContent = "resets in " + countdown(Number(e.dataset.reset));
    }
    for (const e of document.querySelectorAll("[data-until]")) {
      const u = Number(e.dataset.until);
      e.textContent = e.dataset.what + " until " + clock(u) + " (" + countdown(u) + ")";
    }
  }

  // ---- wiring --------------------------------------------------------------

  function init() {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const k = $("key").value.trim();
      $("key").value = "";
      if (!k) return;
      state.key = k;
      sessionStorage.setItem(KEY_STORE, k);
      refresh(true).then(schedule);
    });
    $("forget").addEventListener("click", () => {
      state.key = "";
      sessionStorage.removeItem(KEY_STORE);
      clear($("accounts"));
      clear($("requests").querySelector("tbody"));
      showLogin("Key forgotten. Enter a client key to open the dashboard.");
    });
    $("period").addEventListener("change", () => {
      state.period = $("period").value;
      refresh(true);
    });
    $("pause").addEventListener("click", () => {
      state.paused = !state.paused;
      $("pause").setAttribute("aria-pressed", String(state.paused));
      $("pause").textContent = state.paused ? "Resume updates" : "Pause updates";
      schedule();
      refresh();
    });
    $("filters").addEventListener("submit", (ev) => ev.preventDefault());
    for (const id of ["f-account", "f-status"]) $(id).addEventListener("change", () => refresh());
    $("f-model").addEventListener("change", () => renderRequests(state.requests));
    $("f-rows").addEventListener("change", () => renderRequests(state.requests));
    $("payload-close").addEventListener("click", closePayload);
    $("payload").addEventListener("keydown", (ev) => { if (ev.key === "Escape") closePayload(); });
    document.addEventListener("visibilitychange", () => { if (!document.hidden && state.authed) refresh(); });
    setInterval(tick, 1000);
    refresh().then(schedule);
  }

  init();
})();
