// Demo page for the confluent-consume plugin in `mode: server-sent-events` or `mode: websocket`.
//
// Server-sent events: opens an EventSource on the path in the page's `?stream=` query argument (default
// /stream). The browser resumes by itself after a dropped connection: it sends the last event's id (a
// cursor) as Last-Event-ID, and the plugin continues right after that event.
// WebSocket (`?ws=<path>`, e.g. ?ws=/ws): opens a WebSocket there with `acks=true` and acknowledges every
// frame by its cursor, so the route's consumer group commits what the page has shown; after a dropped
// connection the page reconnects with the last cursor as `last_event_id`.
// Either way the records are listed newest first.
//
// For tests: window.received lists every record ({id, topic, partition, offset}; id is its cursor),
// window.opens counts opened connections (1 + the number of reconnects), window.serverErrors the
// server's errors (`event: error`, websocket error frames), window.acks the acknowledgements sent.
(function () {
  "use strict";

  var MAX_ROWS = 200;
  var MAX_ERRORS = 8;
  var MAX_TEXT = 600;

  window.received = [];
  window.opens = 0;
  window.serverErrors = [];
  window.acks = 0;

  var $ = function (id) { return document.getElementById(id); };
  var ui = {
    state: $("state"), toggle: $("toggle"), clear: $("clear"), count: $("count"), opens: $("opens"),
    errcount: $("errcount"), url: $("url"), lastId: $("last-id"), cap: $("cap"), errors: $("errors"),
    rows: $("rows"), empty: $("empty"),
  };

  var params = new URLSearchParams(location.search);
  var wsPath = params.get("ws");
  var streamUrl = new URL(wsPath || params.get("stream") || "/stream", location.href);
  if (wsPath) streamUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  var source = null;  // the EventSource, or the WebSocket
  var reconnectTimer = null;
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

  function parse(text) {
    try {
      return JSON.parse(text);
    } catch (err) {
      addError("unreadable data: " + String(text).slice(0, 200));
      return null;
    }
  }

  // One record, `id` its cursor (the resume position after it).
  function showRecord(record, id) {
    lastEventId = id || lastEventId;
    window.received.push({ id: id, topic: record.topic, partition: record.partition, offset: record.offset });

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

  function onMessage(e) {
    var record = parse(e.data);
    if (record) showRecord(record, e.lastEventId);
  }

  function serverError(message) {
    window.serverErrors.push(message);
    errorCount += 1;
    ui.errcount.textContent = String(errorCount);
    addError(message);
  }

  // `error` fires both for the server's `event: error` (a MessageEvent carrying JSON {message}) and for
  // connection trouble (a plain Event; readyState tells whether the browser will reconnect).
  function onError(e) {
    if (typeof e.data === "string") {
      var message = e.data;
      try { message = JSON.parse(e.data).message || e.data; } catch (err) { /* keep the raw text */ }
      serverError(message);
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

  function opened() {
    window.opens += 1;
    ui.opens.textContent = String(window.opens);
    setState("open");
  }

  // A frame of records is shown, then acknowledged by its cursor: the group commits only what the page
  // has shown, and a new connection without a cursor would resume right after it.
  function onFrame(e) {
    var frame = parse(e.data);
    if (!frame) return;
    if (frame.type === "records") {
      frame.records.forEach(function (record) { showRecord(record, record.cursor); });
      source.send(JSON.stringify({ type: "ack", cursor: frame.cursor }));
      window.acks += 1;
    } else if (frame.type === "error") {
      serverError(frame.message);
    }
  }

  function connectWebSocket() {
    var url = new URL(streamUrl.href);
    url.searchParams.set("acks", "true");
    if (lastEventId) url.searchParams.set("last_event_id", lastEventId);
    setState("connecting");
    var ws = new WebSocket(url.href);
    source = ws;
    ws.addEventListener("open", opened);
    ws.addEventListener("message", onFrame);
    ws.addEventListener("close", function (e) {
      if (source !== ws) return;  // closed on purpose
      // 1001: the gateway reloads; 1013: reconnect to resume; anything else is worth showing too
      addError("connection closed (" + e.code + (e.reason ? ": " + e.reason : "") + "); reconnecting",
               "connection");
      setState("connecting", "reconnecting");
      reconnectTimer = setTimeout(connectWebSocket, 500);
    });
    ui.toggle.textContent = "Disconnect";
  }

  function connect() {
    if (wsPath) return connectWebSocket();
    var url = new URL(streamUrl.href);
    // A new EventSource sends no Last-Event-ID; pass the cursor in the query to resume after a pause.
    if (lastEventId) url.searchParams.set("last_event_id", lastEventId);
    setState("connecting");
    source = new EventSource(url.href);
    source.addEventListener("open", opened);
    source.addEventListener("message", onMessage);
    source.addEventListener("error", onError);
    ui.toggle.textContent = "Disconnect";
  }

  function disconnect() {
    var closing = source;
    source = null;
    clearTimeout(reconnectTimer);
    if (closing) closing.close();
    setState("closed", "disconnected");
    ui.toggle.textContent = "Connect";
  }

  ui.toggle.addEventListener("click", function () {
    if (source && source.readyState !== source.CLOSED) disconnect(); else connect();
  });
  ui.clear.addEventListener("click", function () {
    ui.rows.textContent = "";
    ui.errors.textContent = "";
    ui.empty.hidden = false;
  });

  connect();
})();
