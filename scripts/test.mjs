#!/usr/bin/env node
// Runs every uvu suite in tests/ under each runtime asked for, one file per
// process, and ends with the line `N passed, N failed` summed over all runs.
//
//   node scripts/test.mjs [--runtimes node,deno] [--bail] [pattern ...]
//
// Node runs the compiled suites in dist/tests (built from the same .ts by
// `npm run build:ts`); Deno runs tests/*.ts as they are. A file whose first
// lines contain `// runtimes: node` (or deno) runs only there: used by suites
// that drive both runtimes themselves (the CLI and lock suites spawn
// children of each kind). A file that crashes or exceeds its time limit
// counts as one failure on top of what it reported.
import { spawn } from "node:child_process";
import { readdirSync, readFileSync, existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
/** A suite file that runs longer than this is killed and counted as failed. */
const FILE_TIMEOUT_MS = 8 * 60 * 1000;

const args = process.argv.slice(2);
let runtimes = ["node", "deno"];
const patterns = [];
let bail = false;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--runtimes") runtimes = args[++i].split(",").filter(Boolean);
  else if (args[i] === "--bail") bail = true;
  else patterns.push(args[i]);
}

const denoBin = join(ROOT, "node_modules", ".bin", "deno");
const files = readdirSync(join(ROOT, "tests"))
  .filter((f) => f.endsWith(".test.ts"))
  .filter((f) => patterns.length === 0 || patterns.some((p) => f.includes(p)))
  .sort();

function runtimesOf(file) {
  const head = readFileSync(join(ROOT, "tests", file), "utf8").split("\n", 5).join("\n");
  const m = /\/\/ runtimes: ([a-z, ]+)/.exec(head);
  return m ? m[1].split(",").map((s) => s.trim()) : ["node", "deno"];
}

function runOne(runtime, file) {
  const cmd = runtime === "node"
    ? [process.execPath, ["--enable-source-maps", join(ROOT, "dist", "tests", file.replace(/\.ts$/, ".js"))]]
    : [denoBin, ["run", "-A", "--quiet", join(ROOT, "tests", file)]];
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(cmd[0], cmd[1], {
      cwd: ROOT,
      env: { ...process.env, SEGSTORE_TEST_RUNTIME: runtime, FORCE_COLOR: "0", NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const timer = setTimeout(() => { out += `\n[killed after ${FILE_TIMEOUT_MS} ms]\n`; child.kill("SIGKILL"); }, FILE_TIMEOUT_MS);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const clean = out.replace(/\x1b\[[0-9;]*m/g, "");
      const total = Number(/Total:\s+(\d+)/.exec(clean)?.[1] ?? 0);
      const passed = Number(/Passed:\s+(\d+)/.exec(clean)?.[1] ?? 0);
      const skipped = Number(/Skipped:\s+(\d+)/.exec(clean)?.[1] ?? 0);
      let failed = total - passed - skipped;
      const ok = code === 0 && signal === null;
      if (!ok && failed === 0) failed = 1; // crashed before or after reporting
      resolve({ runtime, file, passed, failed, skipped, ok, ms: Date.now() - started, out: clean });
    });
  });
}

let passed = 0, failed = 0, skipped = 0;
const t0 = Date.now();
outer: for (const file of files) {
  for (const runtime of runtimes) {
    if (!runtimesOf(file).includes(runtime)) continue;
    if (runtime === "deno" && !existsSync(denoBin)) {
      console.log(`deno  ${file}: no deno binary at ${denoBin} (run npm install)`);
      failed++;
      continue;
    }
    const r = await runOne(runtime, file);
    passed += r.passed; failed += r.failed; skipped += r.skipped;
    const status = r.failed ? "FAIL" : "ok  ";
    console.log(`${status} ${runtime.padEnd(4)} ${file.padEnd(32)} ${String(r.passed).padStart(4)} passed ${String(r.failed).padStart(3)} failed  ${(r.ms / 1000).toFixed(1)}s`);
    if (r.failed || process.env.SEGSTORE_TEST_VERBOSE) {
      console.log(r.out.split("\n").map((l) => "    | " + l).join("\n"));
      if (bail && r.failed) break outer;
    }
  }
}
console.log(`\n${files.length} files, ${runtimes.join("+")}, ${((Date.now() - t0) / 1000).toFixed(1)}s${skipped ? `, ${skipped} skipped` : ""}`);
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
