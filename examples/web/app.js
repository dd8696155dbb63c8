// Demo page for the confluent-consume plugin in `mode: server-sent-events`.
//
// Opens an EventSource on the path in the page's `?stream=` query argument (default /stream) and lists
// the records newest first. The browser resumes by itself after a dropped connection: it sends the last
// event's id (a cursor) as Last-Event-ID, and the plugin continues right after that event.
//
// For tests: window.received lists every message event ({id, topic, partition, offset}), window.opens
// counts `open` events (1 + the number of reconnects), window.serverErrors the server's `event: error`s.
(function () {
  "use strict";

  var MAX_ROWS = 200;
  var MAX_ERRORS = 8;
  var MAX_TEXT = 600;

  window.received = [];
  window.opens = 0;
  window.serverErrors = [];

  var $ = function (id) { return document.getElementById(id); };
  var ui = {
    state: $("state"), toggle: $("toggle"), clear: $("clear"), count: $("count"), opens: $("opens"),
    errcount: $("errcount"), url: $("url"), lastId: $("last-id"), cap: $("cap"), errors: $("errors"),
    rows: $("rows"), empty: $("empty"),
  };

  var streamPath = new URLSearchParams(location.search).get("stream") || "/stream";
  var streamUrl = new URL(streamPath, location.href);
  var source = null;
  var lastEventId = "";
  var errorCount = 0;

  ui.url.textContent = streamUrl.pathname + streamUrl.search;
  ui.cap.textContent = String(MAX_ROWS);

  function setState(name, label) {
    ui.state.className = "badge " + name;
    ui.state.textContent = label || name;
  }

  function clock(ms) {
    var d = ms ? new Date(ms) : new Date();
    return isNaN(d.getTime()) ? "" : d.toLocaleTimeString();
  }

  // A key or value as text: strings as they are, JSON (the json deserializer) compact, binary as base64.
  function show(v) {
    var text;
    if (v === null || v === undefined) {
      text = "∅";
    } else if (typeof v === "string") {
      text = v;
    } else {
      text = JSON.stringify(v);
    }
    return text.length > MAX_TEXT ? text.slice(0, MAX_TEXT) + "…" : text;
  }

  function cell(text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    td.title = text;
    if (className) td.className = className;
    return td;
  }

  function addError(message, kind) {
    var li = document.createElement("li");
    if (kind) li.className = kind;
    var time = document.createElement("time");
    time.textContent = clock();
    var text = document.createElement("span");
    text.textContent = message;
    li.appendChild(time);
    li.appendChild(text);
    ui.errors.insertBefore(li, ui.errors.firstChild);
    while (ui.errors.children.length > MAX_ERRORS) ui.errors.removeChild(ui.errors.lastChild);
  }

  function onMessage(e) {
    var record;
    try {
      record = JSON.parse(e.data);
    } catch (err) {
      addError("unreadable event data: " + String(e.data).slice(0, 200));
      return;
    }
    lastEventId = e.lastEventId || lastEventId;
    window.received.push({ id: e.lastEventId, topic: record.topic, partition: record.partition,
                           offset: record.offset });

    var tr = document.createElement("tr");
    tr.className = "fresh";
    tr.appendChild(cell(record.topic, "cell"));
    tr.appendChild(cell(String(record.partition), "num"));
    tr.appendChild(cell(String(record.offset), "num"));
    tr.appendChild(cell(show(record.key), "cell"));
    var value = show(record.value);
    if (record.value_error) value += "   (" + record.value_error + ")";
    tr.appendChild(cell(value, "cell value"));
    tr.appendChild(cell(clock(record.timestamp), "time"));
    ui.rows.insertBefore(tr, ui.rows.firstChild);
    while (ui.rows.children.length > MAX_ROWS) ui.rows.removeChild(ui.rows.lastChild);

    ui.empty.hidden = true;
    ui.count.textContent = String(window.received.length);
    ui.lastId.textContent = lastEventId || "–";
  }

  // `error` fires both for the server's `event: error` (a MessageEvent carrying JSON {message}) and for
  // connection trouble (a plain Event; readyState tells whether the browser will reconnect).
  function onError(e) {
    if (typeof e.data === "string") {
      var message = e.data;
      try { message = JSON.parse(e.data).message || e.data; } catch (err) { /* keep the raw text */ }
      window.serverErrors.push(message);
      errorCount += 1;
      ui.errcount.textContent = String(errorCount);
      addError(message);
      return;
    }
    if (!source) return;
    if (source.readyState === EventSource.CLOSED) {
      setState("closed");
      addError("connection failed; the browser will not retry (reload the page to try again)", "connection");
      ui.toggle.textContent = "Connect";
    } else {
      setState("connecting", "reconnecting");
    }
  }

  function connect() {
    var url = new URL(streamUrl.href);
    // A new EventSource sends no Last-Event-ID; pass the cursor in the query to resume after a pause.
    if (lastEventId) url.searchParams.set("last_event_id", lastEventId);
    setState("connecting");
    source = new EventSource(url.href);
    source.addEventListener("open", function () {
      window.opens += 1;
      ui.opens.textContent = String(window.opens);
      setState("open");
    });
    source.addEventListener("message", onMessage);
    source.addEventListener("error", onError);
    ui.toggle.textContent = "Disconnect";
  }

  function disconnect() {
    if (source) source.close();
    source = null;
    setState("closed", "disconnected");
    ui.toggle.textContent = "Connect";
  }

  ui.toggle.addEventListener("click", function () {
    if (source && source.readyState !== EventSource.CLOSED) disconnect(); else connect();
  });
  ui.clear.addEventListener("click", function () {
    ui.rows.textContent = "";
    ui.errors.textContent = "";
    ui.empty.hidden = false;
  });

  connect();
})();
