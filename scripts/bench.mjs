#!/usr/bin/env node
// Runs the benchmarks side by side (BENCH.md) and prints one JSON line per
// measurement, then the ratio table segstore/peer.
//
//   npm run bench                           all workloads, both runtimes, medians of 3 runs
//   npm run bench -- W1 W3 --quick          some workloads; --quick = small n, 1 run (smoke test)
//   node scripts/bench.mjs [WORKLOAD ...] [--quick] [--runs N] [--runtimes node,deno]
//                          [--stores segstore,lmdb] [--write-results[=W1,W2,...]] [--list]
//
// Every measurement runs in its own child process: `node dist/bench/X.js`
// (so build first: `npm run bench` does) and `deno run -A bench/X.ts`. The
// children speak the protocol described at the top of bench/harness.ts:
// `--list` names their cases, `--phase prepare` sets up untimed data (the W1
// store that W3 and W5 open), `--phase run` measures once and prints JSON
// lines. This script repeats each case, takes medians, removes the data
// under .bench-data/, and prints the table. stdout carries only the JSON
// lines and the table; progress and failures go to stderr.
//
// --write-results replaces, in bench/RESULTS.md, the generated block of each
// workload that was run (between `<!-- bench:auto W1 start -->` and its end
// mark), leaving the other blocks and all hand-written text alone;
// --write-results=W1,W2 replaces only those blocks. A run of every workload
// (no workload named, no --stores) also replaces the `full` block: the whole
// table of that one run.
//
// To add a workload: write bench/NAME.ts calling `benchMain(cases)` from
// bench/harness.ts, and add a row to REGISTRY below. A file that prints its
// own JSON lines without the protocol is registered with protocol "plain":
// it runs once per runtime (with --quick passed on, and BENCH_RUNS in its
// environment) and its lines are taken as they are.
import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync, rmdirSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const DENO = join(ROOT, "node_modules", ".bin", "deno");
/** Where the stores under test live: in the repo (gitignored), on the same disk as real stores, never a tmpfs. */
const DATA_ROOT = join(ROOT, ".bench-data");
const RESULTS_PATH = join(ROOT, "bench", "RESULTS.md");
/** The RESULTS.md block that holds the whole table of the last run of every workload. */
const FULL_RUN_BLOCK = "full";
/** A child that runs longer than this is killed and its case reported as failed (a full W3 on Deno KV takes minutes). */
const CHILD_TIMEOUT_MS = 30 * 60 * 1000;
/** Lines of a failed child's stderr shown in the report. */
const FAILURE_TAIL_LINES = 12;

/**
 * Workload name -> the bench files that measure it. A workload may be
 * measured by several files (W4: the stores and the fdatasync limit; W6: the
 * blob stores and the plain-fs limit). Files not written yet are skipped
 * with a message.
 */
const REGISTRY = [
  { file: "store", workloads: ["W1", "W2", "W3", "W4", "W5"] },
  { file: "limits", workloads: ["W4", "W6"] },
  { file: "blobs", workloads: ["W6"] },
  { file: "server", workloads: ["W7", "W8", "W9"] },
  { file: "core", workloads: ["core"], protocol: "plain" },
];
const ALL_WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9", "core"];
const ALL_RUNTIMES = ["node", "deno"];

const USAGE = `usage: node scripts/bench.mjs [WORKLOAD ...] [--quick] [--runs N] [--runtimes node,deno] [--stores a,b] [--write-results[=W1,W2]] [--list]
workloads: ${ALL_WORKLOADS.join(" ")}`;

// ---------------------------------------------------------------------------
// Options

function parseOptions(argv) {
  const o = { workloads: [], quick: false, runs: undefined, runtimes: ALL_RUNTIMES, stores: undefined, writeResults: false, list: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--quick") o.quick = true;
    else if (a === "--write-results") o.writeResults = true;
    else if (a.startsWith("--write-results=")) o.writeResults = a.slice("--write-results=".length).split(",").filter(Boolean);
    else if (a === "--list") o.list = true;
    else if (a === "--runs") o.runs = Number(argv[++i]);
    else if (a === "--runtimes") o.runtimes = (argv[++i] ?? "").split(",").filter(Boolean);
    else if (a === "--stores") o.stores = (argv[++i] ?? "").split(",").filter(Boolean);
    else if (a === "--help" || a === "-h") { console.log(USAGE); process.exit(0); }
    else if (a.startsWith("-")) fail(`unknown option ${a}\n${USAGE}`);
    else {
      const w = ALL_WORKLOADS.find((x) => x.toLowerCase() === a.toLowerCase().split("-")[0]);
      if (w === undefined) fail(`unknown workload ${a}\n${USAGE}`);
      if (!o.workloads.includes(w)) o.workloads.push(w);
    }
  }
  if (o.runs !== undefined && !(Number.isInteger(o.runs) && o.runs >= 1)) fail(`--runs takes a whole number >= 1`);
  for (const r of o.runtimes) if (!ALL_RUNTIMES.includes(r)) fail(`unknown runtime ${r}: expected node and/or deno`);
  o.full = o.workloads.length === 0 && o.stores === undefined && o.runtimes.length === ALL_RUNTIMES.length;
  if (o.workloads.length === 0) o.workloads = [...ALL_WORKLOADS];
  else o.workloads.sort((a, b) => ALL_WORKLOADS.indexOf(a) - ALL_WORKLOADS.indexOf(b));
  return o;
}

function fail(message) {
  console.error(`bench: ${message}`);
  process.exit(2);
}

const options = parseOptions(process.argv.slice(2));
const harnessPath = join(ROOT, "dist", "bench", "harness.js");
if (!existsSync(harnessPath)) fail(`${harnessPath} is missing: build first (npm run build:ts, or npm run bench which builds)`);
const H = await import(pathToFileURL(harnessPath).href);

// ---------------------------------------------------------------------------
// Children

/** The command that runs bench file `file` under `runtime`, or undefined when that runtime cannot run it. */
function childCommand(file, runtime) {
  if (runtime === "node") {
    const js = join(ROOT, "dist", "bench", `${file}.js`);
    return existsSync(js) ? [process.execPath, [js]] : undefined;
  }
  const ts = join(ROOT, "bench", `${file}.ts`);
  return existsSync(ts) && existsSync(DENO) ? [DENO, ["run", "-A", "--unstable-kv", "--quiet", ts]] : undefined;
}

let currentChild;

/** Runs one child to its end; resolves { code, signal, stdout, stderr, ms }. */
function runChild(file, runtime, args) {
  const [cmd, base] = childCommand(file, runtime);
  return new Promise((resolve) => {
    const env = { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" };
    if (options.runs !== undefined) env.BENCH_RUNS = String(options.runs);
    // Taken last, right before spawn: W5 measures from here to its first get.
    env[H.SPAWN_EPOCH_ENV] = String(H.epochMs());
    const started = Date.now();
    const child = spawn(cmd, [...base, ...args], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
    currentChild = child;
    let stdout = "", stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => { stderr += `\n[killed after ${CHILD_TIMEOUT_MS} ms]`; child.kill("SIGKILL"); }, CHILD_TIMEOUT_MS);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      currentChild = undefined;
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** A child that exited non-zero: `message` is the one-line reason, `detail` the end of its stderr. */
class ChildFailed extends Error {
  constructor(message, detail = "") {
    super(message);
    this.detail = detail;
  }
}

async function runChildOk(file, runtime, args, what) {
  const r = await runChild(file, runtime, args);
  if (r.code !== 0 || r.signal !== null) {
    const stderr = r.stderr.replace(/\x1b\[[0-9;]*m/g, "").trim().split("\n");
    const reason = stderr.find((l) => l.startsWith(H.CHILD_ERROR_PREFIX))?.slice(H.CHILD_ERROR_PREFIX.length);
    const tail = stderr.slice(-FAILURE_TAIL_LINES).join("\n");
    throw new ChildFailed(`${what} exited ${r.signal ?? r.code}: ${reason ?? "(no reason given)"}`, tail);
  }
  return r;
}

const caseLists = new Map();

/** The cases `file` offers under `runtime` (its --list), cached. */
async function listCases(file, runtime) {
  const key = `${file}:${runtime}`;
  if (!caseLists.has(key)) {
    const args = ["--list", ...(options.quick ? ["--quick"] : [])];
    const r = await runChildOk(file, runtime, args, `bench/${file}.ts --list (${runtime})`);
    caseLists.set(key, r.stdout.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l)));
  }
  return caseLists.get(key);
}

function progress(text) {
  process.stderr.write(`${text}\n`);
}

/** Prepares (if it asks to), runs `runs` times, takes medians; data removed whatever happens. */
async function runCase(file, runtime, c) {
  const caseDir = join(DATA_ROOT, `${c.workload}-${c.store}-${runtime}-${process.pid}`);
  rmSync(caseDir, { recursive: true, force: true });
  mkdirSync(caseDir, { recursive: true });
  const runs = options.runs ?? c.runs;
  const label = `${c.case} (${runtime})`;
  const quick = options.quick ? ["--quick"] : [];
  try {
    const prepared = join(caseDir, "store");
    if (c.prepare) {
      progress(`${label}: preparing`);
      await runChildOk(file, runtime, ["--case", c.case, "--phase", "prepare", "--dir", prepared, ...quick], `${label} prepare`);
    }
    const perRun = [];
    for (let r = 1; r <= runs; r++) {
      const dir = c.prepare ? prepared : join(caseDir, `run-${r}`);
      const res = await runChildOk(file, runtime, ["--case", c.case, "--phase", "run", "--dir", dir, ...quick], `${label} run ${r}`);
      const lines = H.parseLines(res.stdout);
      if (lines.length === 0) throw new ChildFailed(`${label} run ${r} printed no result line`);
      perRun.push(lines);
      progress(`${label}: run ${r}/${runs} ${(res.ms / 1000).toFixed(1)}s ${lines.map(summary).join(", ")}`);
      if (!c.prepare) rmSync(dir, { recursive: true, force: true });
    }
    return H.medianLines(perRun);
  } finally {
    rmSync(caseDir, { recursive: true, force: true });
  }
}

/** A "plain" file: run once, take its lines as they are. */
async function runPlain(file, runtime) {
  const label = `bench/${file}.ts (${runtime})`;
  progress(`${label}: running`);
  const res = await runChildOk(file, runtime, options.quick ? ["--quick"] : [], label);
  return H.parseLines(res.stdout);
}

function summary(line) {
  const h = H.headlineOf(line);
  return h ? `${line.workload} ${Math.round(h.value * 100) / 100} ${h.unit}` : line.workload;
}

// ---------------------------------------------------------------------------
// The run

if (options.list) {
  for (const entry of REGISTRY) {
    for (const runtime of options.runtimes) {
      if (childCommand(entry.file, runtime) === undefined) { console.log(`${entry.file} (${runtime}): not written yet`); continue; }
      if (entry.protocol === "plain") { console.log(`${entry.file} (${runtime}): ${entry.workloads.join(" ")} (plain)`); continue; }
      for (const c of await listCases(entry.file, runtime)) console.log(`${c.case} (${runtime})${c.prepare ? " prepared" : ""}, ${c.runs} runs`);
    }
  }
  process.exit(0);
}

process.on("SIGINT", () => {
  currentChild?.kill("SIGKILL");
  rmSync(DATA_ROOT, { recursive: true, force: true });
  process.exit(130);
});

mkdirSync(DATA_ROOT, { recursive: true });
const results = [];
const failures = [];
const skipped = new Set();
const plainDone = new Set();
const startedAt = new Date();
/** The machine is shared: the load before we started says how quiet it was. */
const loadAtStart = loadavg()[0];

for (const workload of options.workloads) {
  for (const entry of REGISTRY.filter((e) => e.workloads.includes(workload))) {
    for (const runtime of options.runtimes) {
      if (childCommand(entry.file, runtime) === undefined) {
        const why = runtime === "deno" && !existsSync(DENO) ? `no deno at ${DENO}` : `bench/${entry.file}.ts not written (or not built) yet`;
        const note = `${workload}: ${why} (${runtime}), skipped`;
        if (!skipped.has(note)) { skipped.add(note); progress(note); }
        continue;
      }
      try {
        if (entry.protocol === "plain") {
          const key = `${entry.file}:${runtime}`;
          if (plainDone.has(key)) continue;
          plainDone.add(key);
          const lines = await runPlain(entry.file, runtime);
          for (const l of lines) console.log(H.formatLine(l));
          results.push(...lines);
          continue;
        }
        const cases = (await listCases(entry.file, runtime))
          .filter((c) => c.workload === workload)
          .filter((c) => options.stores === undefined || options.stores.includes(c.store));
        for (const c of cases) {
          try {
            const lines = await runCase(entry.file, runtime, c);
            for (const l of lines) console.log(H.formatLine(l));
            results.push(...lines);
          } catch (e) {
            if (!(e instanceof ChildFailed)) throw e;
            failures.push({ workload, store: c.store, runtime, message: e.message });
            progress(`FAILED ${e.message}\n${e.detail.replace(/^/gm, "    | ")}`);
          }
        }
      } catch (e) {
        if (!(e instanceof ChildFailed)) throw e;
        failures.push({ workload, store: entry.file, runtime, message: e.message });
        progress(`FAILED ${e.message}\n${e.detail.replace(/^/gm, "    | ")}`);
      }
    }
  }
}
try { if (readdirSync(DATA_ROOT).length === 0) rmdirSync(DATA_ROOT); } catch { /* someone else's run is using it */ }

// ---------------------------------------------------------------------------
// The table

/** What the reader needs to weigh the figures: when, how, on what. */
function provenance() {
  const command = process.env.npm_lifecycle_event === "bench"
    ? `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`
    : `node scripts/bench.mjs ${process.argv.slice(2).join(" ")}`.trim();
  let deno = "deno ?";
  try { deno = execFileSync(DENO, ["--version"], { encoding: "utf8" }).split("\n")[0]; } catch { /* no deno */ }
  const cpu = cpus();
  const date = startedAt.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  return `Measured ${date} with \`${command}\`: ${cpu.length} × ${cpu[0]?.model ?? "cpu"}, node ${process.version}, ${deno}, ` +
    `filesystem ${fsTypeOf(ROOT)}, load average ${loadAtStart.toFixed(2)} at start. Figures are medians of the runs column; MB = MiB; ratio = segstore ÷ store ` +
    `(above 1: segstore faster; for ms rows, above 1: segstore slower).`;
}

/** The filesystem type holding `path`, from /proc/mounts (longest matching mount point). */
function fsTypeOf(path) {
  try {
    let best = { mount: "", type: "unknown" };
    for (const line of readFileSync("/proc/mounts", "utf8").split("\n")) {
      const [, mount, type] = line.split(" ");
      if (mount && (path === mount || path.startsWith(mount.endsWith("/") ? mount : mount + "/")) && mount.length > best.mount.length) best = { mount, type };
    }
    return best.type;
  } catch {
    return "unknown";
  }
}

function failureText(list) {
  return list.map((f) => `- ${f.workload} ${f.store} (${f.runtime}) failed: ${f.message}`).join("\n");
}

const about = provenance();
console.log("");
console.log(about);
console.log("");
console.log(results.length ? H.ratioTable(results) : "(no results)");
if (failures.length) {
  console.log("");
  console.log(failureText(failures));
}

if (options.writeResults) {
  const groups = new Map();
  const groupOf = (w) => w.split("-")[0];
  const chosen = options.writeResults === true ? options.workloads : options.writeResults;
  for (const w of options.workloads) if (chosen.some((c) => c.toLowerCase() === w.toLowerCase())) groups.set(w, { lines: [], failures: [] });
  for (const l of results) groups.get(groupOf(l.workload))?.lines.push(l);
  for (const f of failures) groups.get(groupOf(f.workload))?.failures.push(f);
  const blocks = new Map();
  for (const [group, { lines, failures: fl }] of groups) {
    if (lines.length === 0 && fl.length === 0) continue;
    blocks.set(group, [about, "", lines.length ? H.ratioTable(lines) : "(no results)", ...(fl.length ? ["", failureText(fl)] : [])].join("\n"));
  }
  if (options.full) {
    blocks.set(FULL_RUN_BLOCK, [about, "", results.length ? H.ratioTable(results) : "(no results)", ...(failures.length ? ["", failureText(failures)] : [])].join("\n"));
  }
  const before = existsSync(RESULTS_PATH) ? readFileSync(RESULTS_PATH, "utf8") : "# Benchmark results\n";
  writeFileSync(RESULTS_PATH, H.replaceResultsBlocks(before, blocks));
  progress(`bench/RESULTS.md: replaced ${[...blocks.keys()].join(", ") || "nothing"}`);
}

process.exitCode = failures.length ? 1 : 0;
