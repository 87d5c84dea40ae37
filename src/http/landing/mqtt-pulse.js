// The landing page's live table, served by the binary at static/mqtt-pulse.js.
//
// The server renders the whole table; this script only improves it, so the page
// says the same without JavaScript. It follows `events` (Server-Sent Events, same
// origin, so a browser sends the page's basic-auth credentials again) and updates
// each row in place: status (text and colour), reason, last ping RTT, time since
// the last change, a sparkline of recent RTTs. It adds a filter by name and
// sorting by client id or status. No library, no request to any other origin,
// no inline script or style (a Content-Security-Policy may forbid both), and no
// innerHTML: client ids are text from outside and only ever set as text.
(function () {
  "use strict";

  var table = document.getElementById("clients");
  if (!table || !table.tHead || !window.EventSource) {
    return; // the server-rendered table stays as it is
  }
  var tbody = table.tBodies[0];
  var HISTORY = 30; // RTTs kept per client for its sparkline
  var SVG = "http://www.w3.org/2000/svg";
  // Problems first when sorting by status.
  var STATUS_ORDER = { down: 0, terminating: 1, terminated: 2, up: 3 };
  // Columns once the sparkline's is added (the server renders all but it).
  var COLUMN = { id: 0, status: 1, since: 2, rtt: 3, spark: 4, broker: 5 };

  var entries = new Map(); // client id -> row entry
  var sorting = { key: null, direction: 1 };
  var source = null;
  // How far this browser's clock is ahead of the server's, in seconds: "time
  // since the last change" compares the server's timestamps with the server's
  // now. Taken from each ping response, stamped by the server a moment before
  // it arrives here: the smallest of the last 20 differences, as a late
  // delivery only ever makes the difference larger.
  var skew = 0;
  var skews = [];

  function serverNow() {
    return Date.now() / 1000 - skew;
  }

  var headRow = table.tHead.rows[0];
  var sparkHead = document.createElement("th");
  sparkHead.scope = "col";
  sparkHead.textContent = "Recent RTTs";
  headRow.insertBefore(sparkHead, headRow.cells[COLUMN.spark]);
  headRow.cells[COLUMN.since].textContent = "Status since";

  // ---- formatting -------------------------------------------------------------

  function formatRtt(seconds) {
    return seconds < 1 ? (seconds * 1e3).toFixed(3) + " ms" : seconds.toFixed(3) + " s";
  }

  function formatAgo(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) { return s + " s ago"; }
    var m = Math.floor(s / 60);
    if (m < 60) { return m + " min ago"; }
    var h = Math.floor(m / 60);
    if (h < 48) { return h + " h " + (m % 60) + " min ago"; }
    return Math.floor(h / 24) + " d " + (h % 24) + " h ago";
  }

  function formatUtc(unixSeconds) {
    var date = new Date(unixSeconds * 1000);
    return isNaN(date.getTime()) ? "" : date.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  function statusText(entry) {
    return entry.reason ? entry.status + " (" + entry.reason + ")" : entry.status;
  }

  // ---- rows ----------------------------------------------------------------------

  // Takes over a server-rendered row (or one made by newRow).
  function adopt(tr) {
    var spark = document.createElement("td");
    spark.className = "spark";
    tr.insertBefore(spark, tr.cells[COLUMN.spark]);
    var entry = {
      tr: tr,
      id: tr.dataset.clientId,
      broker: tr.cells[COLUMN.broker].textContent,
      status: tr.dataset.status,
      reason: tr.dataset.reason || null,
      since: parseFloat(tr.dataset.since),
      rtts: [],
      statusCell: tr.cells[COLUMN.status],
      rttCell: tr.cells[COLUMN.rtt],
      sparkCell: spark,
      sinceCell: tr.cells[COLUMN.since],
      agoText: document.createTextNode(""),
      utcText: document.createElement("small"),
    };
    entry.rttCell.className = "rtt";
    entry.sinceCell.className = "since";
    entry.sinceCell.textContent = "";
    entry.sinceCell.appendChild(entry.agoText);
    entry.sinceCell.appendChild(entry.utcText);
    if (tr.dataset.rtt) {
      entry.rtts.push(parseFloat(tr.dataset.rtt));
    }
    // Done flashing: without this, a row moved by sorting would flash again.
    tr.addEventListener("animationend", function () { tr.classList.remove("changed"); });
    entries.set(entry.id, entry);
    renderStatus(entry);
    renderSince(entry, serverNow());
    renderSpark(entry);
    return entry;
  }

  // A client the page did not list when it was served (a target added since).
  function newRow(id) {
    var tr = document.createElement("tr");
    tr.dataset.clientId = id;
    tr.dataset.status = "down";
    tr.dataset.since = String(serverNow());
    [id, "", "", "–", "–"].forEach(function (text) {
      var td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    });
    tbody.appendChild(tr);
    return adopt(tr);
  }

  function renderStatus(entry) {
    entry.tr.dataset.status = entry.status;
    entry.statusCell.className = entry.status;
    entry.statusCell.textContent = statusText(entry);
  }

  function renderSince(entry, now) {
    entry.agoText.data = isNaN(entry.since) ? "" : formatAgo(now - entry.since);
    entry.utcText.textContent = formatUtc(entry.since);
  }

  function renderSpark(entry) {
    var cell = entry.sparkCell;
    cell.textContent = "";
    var values = entry.rtts;
    if (values.length === 0) {
      cell.textContent = "–";
      return;
    }
    var width = 96, height = 22, pad = 2;
    // From zero, not from the smallest: a few microseconds of jitter must not
    // look like a spike.
    var min = Math.min.apply(null, values), max = Math.max.apply(null, values);
    var span = max || 1;
    var step = values.length > 1 ? (width - 2 * pad) / (HISTORY - 1) : 0;
    var offset = width - pad - step * (values.length - 1);
    var points = values.map(function (v, i) {
      var x = offset + step * i;
      var y = height - pad - (v / span) * (height - 2 * pad);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "sparkline");
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("role", "img");
    var label = values.length + " recent RTTs, " + formatRtt(min) + " to " + formatRtt(max);
    svg.setAttribute("aria-label", label);
    var title = document.createElementNS(SVG, "title");
    title.textContent = label;
    svg.appendChild(title);
    if (values.length > 1) {
      var line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", points.join(" "));
      svg.appendChild(line);
    }
    var last = points[points.length - 1].split(",");
    var dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("cx", last[0]);
    dot.setAttribute("cy", last[1]);
    dot.setAttribute("r", "2");
    svg.appendChild(dot);
    cell.appendChild(svg);
  }

  function flash(entry) {
    entry.tr.classList.remove("changed");
    void entry.tr.offsetWidth; // restart the animation
    entry.tr.classList.add("changed");
  }

  // ---- summary, filter, sort ---------------------------------------------------

  var summary = document.getElementById("summary");
  var changes = document.getElementById("changes");
  var live = document.getElementById("live");
  var filter = document.getElementById("filter");
  var shown = document.getElementById("shown");

  function updateSummary() {
    var up = 0;
    entries.forEach(function (entry) {
      if (entry.status === "up") { up += 1; }
    });
    if (summary) {
      summary.textContent = entries.size + " clients, " + up + " up.";
    }
  }

  function applyFilter() {
    var query = filter ? filter.value.trim().toLowerCase() : "";
    var visible = 0;
    entries.forEach(function (entry) {
      var match = !query || entry.id.toLowerCase().indexOf(query) >= 0 ||
        entry.broker.toLowerCase().indexOf(query) >= 0;
      entry.tr.hidden = !match;
      if (match) { visible += 1; }
    });
    if (shown) {
      shown.textContent = query ? visible + " of " + entries.size + " shown" : "";
    }
  }

  function compare(a, b) {
    var byId = a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    if (sorting.key === "status") {
      var order = (STATUS_ORDER[a.status] || 0) - (STATUS_ORDER[b.status] || 0);
      return order !== 0 ? order * sorting.direction : byId;
    }
    return byId * sorting.direction;
  }

  function applySort() {
    if (!sorting.key) { return; }
    Array.from(entries.values()).sort(compare).forEach(function (entry) {
      tbody.appendChild(entry.tr);
    });
  }

  function sortButton(th, key) {
    var button = document.createElement("button");
    button.type = "button";
    button.textContent = th.textContent;
    th.textContent = "";
    th.appendChild(button);
    button.addEventListener("click", function () {
      sorting.direction = sorting.key === key ? -sorting.direction : 1;
      sorting.key = key;
      Array.prototype.forEach.call(headRow.cells, function (cell) {
        cell.removeAttribute("aria-sort");
      });
      th.setAttribute("aria-sort", sorting.direction > 0 ? "ascending" : "descending");
      applySort();
    });
  }

  sortButton(headRow.cells[COLUMN.id], "id");
  sortButton(headRow.cells[COLUMN.status], "status");

  // ---- the stream ----------------------------------------------------------------

  function announce(text) {
    if (changes) {
      var now = new Date().toISOString().slice(11, 19);
      changes.textContent = now + " UTC: " + text;
    }
  }

  function setLive(text, ok) {
    if (live) {
      live.textContent = text;
      live.className = ok ? "live" : "lost";
    }
  }

  function parse(event) {
    try {
      return JSON.parse(event.data);
    } catch (error) {
      return null;
    }
  }

  function onStatus(event) {
    var data = parse(event);
    if (!data || typeof data.client_id !== "string") { return; }
    var entry = entries.get(data.client_id) || newRow(data.client_id);
    var reason = data.reason || null;
    var changed = entry.status !== data.status || entry.reason !== reason;
    entry.status = data.status;
    entry.reason = reason;
    entry.since = data.at;
    renderStatus(entry);
    renderSince(entry, serverNow());
    if (changed) {
      flash(entry);
      announce(entry.id + " is " + statusText(entry));
      updateSummary();
      applySort();
      applyFilter();
    }
  }

  function onPing(event) {
    var data = parse(event);
    if (!data || typeof data.client_id !== "string") { return; }
    var entry = entries.get(data.client_id);
    if (typeof data.at === "number") {
      skews.push(Date.now() / 1000 - data.at);
      if (skews.length > 20) { skews.shift(); }
      skew = Math.min.apply(null, skews);
    }
    if (!entry || typeof data.rtt_seconds !== "number") { return; }
    entry.rtts.push(data.rtt_seconds);
    if (entry.rtts.length > HISTORY) { entry.rtts.shift(); }
    entry.tr.dataset.rtt = String(data.rtt_seconds);
    entry.rttCell.textContent = formatRtt(data.rtt_seconds);
    renderSpark(entry);
  }

  function connect() {
    if (source) { source.close(); }
    // Only the kinds this page shows: probes send as many round_trip events
    // as there are pings.
    source = new EventSource("events?kind=status,ping_response");
    source.addEventListener("open", function () { setLive("live", true); });
    source.addEventListener("status", onStatus);
    source.addEventListener("ping_response", onPing);
    // This page fell behind and lost events: start again, which sends every
    // client's present state first.
    source.addEventListener("dropped", function () {
      setLive("fell behind; catching up", false);
      connect();
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (503 at the stream cap, 401): the browser gives up; try again.
        setLive("not live; retrying in 5 s", false);
        setTimeout(connect, 5000);
      } else {
        setLive("reconnecting…", false);
      }
    });
  }

  Array.prototype.forEach.call(tbody.rows, adopt);
  updateSummary();
  if (filter) {
    filter.addEventListener("input", applyFilter);
  }
  document.documentElement.classList.add("live-page");
  var controls = document.getElementById("controls");
  if (controls) { controls.hidden = false; }
  setInterval(function () {
    var now = serverNow();
    entries.forEach(function (entry) { renderSince(entry, now); });
  }, 1000);
  connect();
})();
