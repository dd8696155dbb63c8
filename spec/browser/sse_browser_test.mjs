#!/usr/bin/env node
// Drives the server-sent-events demo page (examples/web/index.html) in headless Debian chromium and
// reports what the page's EventSource received.
//
//   node spec/browser/sse_browser_test.mjs --url http://127.0.0.1:PORT/demo/index.html?stream=/stream \
//       --expect N [--wait-opens K] [--timeout-ms T] [--settle-ms S]
//       [--phase-file PATH --expect2 M]
//
// One page session. Phase 1 waits until window.received.length >= N and window.opens >= K (default 1).
// With --phase-file, the phase-1 snapshot is then written to PATH (atomically: written aside, renamed),
// and phase 2 waits, in the same page, until received >= M and opens >= K (default 2: the page has
// reconnected at least once). The caller can act between the phases (e.g. restart the server) once
// PATH appears. After the last phase the script waits --settle-ms more, so that surplus events (duplicates)
// would show, and prints one JSON line: {"received":[{id,topic,partition,offset}...],"opens":K,
// "serverErrors":[...]}. Exit status 0 on success; on failure a message (with the page's state and
// console) on stderr and a non-zero status: 1 timeout or page error, 2 bad usage or missing browser.
//
// --timeout-ms is the budget of the whole run (default 60000). The browser is /usr/bin/chromium unless
// --chromium PATH or $CHROMIUM says otherwise; it runs with a fresh temporary profile.
import { existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const USAGE = "usage: node spec/browser/sse_browser_test.mjs --url URL --expect N [--wait-opens K] " +
  "[--timeout-ms T] [--settle-ms S] [--phase-file PATH --expect2 M] [--chromium PATH]";

function fail(status, message) {
  process.stderr.write(`sse_browser_test: ${message}\n`);
  process.exit(status);
}

function parseArgs(argv) {
  const opts = {
    url: null, expect: null, expect2: null, waitOpens: null, timeoutMs: 60000, settleMs: 0,
    phaseFile: null, chromium: process.env.CHROMIUM || "/usr/bin/chromium",
  };
  const integer = (name, v) => {
    if (!/^\d+$/.test(v ?? "")) fail(2, `${name} needs a non-negative integer\n${USAGE}`);
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) fail(2, `${arg} needs a value\n${USAGE}`);
      return argv[++i];
    };
    switch (arg) {
      case "--url": opts.url = value(); break;
      case "--expect": opts.expect = integer(arg, value()); break;
      case "--expect2": opts.expect2 = integer(arg, value()); break;
      case "--wait-opens": opts.waitOpens = integer(arg, value()); break;
      case "--timeout-ms": opts.timeoutMs = integer(arg, value()); break;
      case "--settle-ms": opts.settleMs = integer(arg, value()); break;
      case "--phase-file": opts.phaseFile = value(); break;
      case "--chromium": opts.chromium = value(); break;
      case "-h": case "--help": process.stdout.write(USAGE + "\n"); process.exit(0); break;
      default: fail(2, `unknown argument ${arg}\n${USAGE}`);
    }
  }
  if (!opts.url || opts.expect === null) fail(2, USAGE);
  if ((opts.phaseFile === null) !== (opts.expect2 === null)) {
    fail(2, `--phase-file and --expect2 go together\n${USAGE}`);
  }
  return opts;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const opts = parseArgs(process.argv.slice(2));

if (!existsSync(opts.chromium)) {
  fail(2, `no browser at ${opts.chromium}: install Debian's chromium (apt-get install chromium, ` +
          "or scripts/install-deps.sh), or pass --chromium PATH");
}

let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch (err) {
  fail(2, `cannot load playwright-core (${err.message}); run: (cd spec/browser && npm ci)`);
}

const profile = mkdtempSync(join(tmpdir(), "cc-sse-browser-"));
const consoleLines = [];
let context;

async function snapshot(page) {
  return page.evaluate(() => ({
    received: window.received || [],
    opens: window.opens || 0,
    serverErrors: window.serverErrors || [],
  }));
}

// Polls the page until `done(state)` or the deadline; returns the last state.
async function waitFor(page, what, deadline, done) {
  for (;;) {
    const state = await snapshot(page);
    if (done(state)) return state;
    if (Date.now() >= deadline) {
      throw new Error(`timed out waiting for ${what}: received ${state.received.length}, ` +
                      `opens ${state.opens}, server errors ${JSON.stringify(state.serverErrors)}`);
    }
    await sleep(100); // the poll interval of this wait-with-deadline
  }
}

let status = 0;
try {
  const deadline = Date.now() + opts.timeoutMs;
  context = await chromium.launchPersistentContext(profile, {
    executablePath: opts.chromium,
    headless: true,
    timeout: Math.min(opts.timeoutMs, 30000),
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--no-proxy-server",
    ],
  });
  const page = context.pages()[0] || await context.newPage();
  page.on("console", (msg) => consoleLines.push(`console.${msg.type()}: ${msg.text()}`));
  page.on("pageerror", (err) => consoleLines.push(`pageerror: ${err.message}`));

  const response = await page.goto(opts.url, { waitUntil: "load", timeout: Math.max(1, deadline - Date.now()) });
  if (!response || !response.ok()) {
    throw new Error(`GET ${opts.url}: ${response ? response.status() : "no response"}`);
  }

  const opens1 = opts.waitOpens ?? 1;
  let state = await waitFor(page, `${opts.expect} events and ${opens1} open(s)`, deadline,
                            (s) => s.received.length >= opts.expect && s.opens >= opens1);
  if (opts.phaseFile) {
    const aside = `${opts.phaseFile}.tmp-${process.pid}`;
    writeFileSync(aside, JSON.stringify(state) + "\n");
    renameSync(aside, opts.phaseFile);
    const opens2 = opts.waitOpens ?? 2;
    state = await waitFor(page, `${opts.expect2} events and ${opens2} opens`, deadline,
                          (s) => s.received.length >= opts.expect2 && s.opens >= opens2);
  }
  if (opts.settleMs > 0) {
    // an observation window: events arriving after the expected ones (duplicates) are counted too
    await sleep(opts.settleMs);
    state = await snapshot(page);
  }
  process.stdout.write(JSON.stringify(state) + "\n");
} catch (err) {
  status = 1;
  process.stderr.write(`sse_browser_test: ${err.message}\n`);
  if (consoleLines.length) process.stderr.write(consoleLines.slice(-20).join("\n") + "\n");
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(status);
