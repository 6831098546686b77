#!/usr/bin/env node
// The long kill -9 torture (`npm run torture -- --seconds N`): a writer child
// per runtime runs a random workload on a real store and is killed with
// SIGKILL at random moments; after each kill a checker child of the same
// runtime opens the store and the model must hold (every acknowledged commit
// whole, the one in flight whole or absent, nothing else, check clean). See
// tests/_support/torture-run.ts. The runtimes run side by side, each on its
// own store, for the whole time.
//
//   node scripts/torture.mjs [--seconds 600] [--runtimes node,deno] [--seed N] [--kills N] [--keep]
//
// Ends with one line per runtime and `N kills, N violations`; exit code 1 on
// any violation, which is printed with the seed that reproduces the run and
// the store's directory (kept for inspection).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const { torture } = await import(join(ROOT, "dist", "tests", "_support", "torture-run.js"));

/** Default length of a run: the 10 minutes the target (>= 1,000 kills) is stated for. */
const DEFAULT_SECONDS = 600;
/** A progress line per runtime every this many kills. */
const PROGRESS_EVERY = 50;

const args = process.argv.slice(2);
let seconds = DEFAULT_SECONDS;
let runtimes = ["node", "deno"];
let seed = Date.now() % 1_000_000;
let kills;
let keep = false;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === "--seconds") seconds = Number(args[++i]);
  else if (a === "--runtimes") runtimes = args[++i].split(",").filter(Boolean);
  else if (a === "--seed") seed = Number(args[++i]);
  else if (a === "--kills") kills = Number(args[++i]);
  else if (a === "--keep") keep = true;
  else {
    console.error(`torture: unknown argument ${a}\nusage: node scripts/torture.mjs [--seconds N] [--runtimes node,deno] [--seed N] [--kills N] [--keep]`);
    process.exit(2);
  }
}
if (!(seconds > 0) || !Number.isSafeInteger(seed) || runtimes.some((r) => r !== "node" && r !== "deno")) {
  console.error("torture: --seconds must be positive, --seed an integer, --runtimes node and/or deno");
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), "segstore-torture-"));
console.log(`torture: ${runtimes.join(" + ")} side by side for ${seconds} s${kills ? ` or ${kills} kills each` : ""}, seed ${seed}, stores under ${dir}`);
const results = await Promise.all(runtimes.map((runtime, i) =>
  torture({
    runtime, store: join(dir, runtime), seed: seed + i, seconds, kills,
    log: (line) => console.log(`  ${line}`), progressEvery: PROGRESS_EVERY,
  })
));

let totalKills = 0;
let totalViolations = 0;
for (const r of results) {
  totalKills += r.kills;
  totalViolations += r.violations.length;
  console.log(
    `${r.runtime}: ${r.kills} kills (${r.killsDuringOpen} during open), ${r.commits} commits acknowledged, ${r.compactions} compactions, ` +
      `${r.reopens} reopens, ${r.inflightLanded} kills inside a commit (${r.inflightLost} lost it), ${(r.ms / 1000).toFixed(0)} s, ` +
      (r.loadRetries ? `${r.loadRetries} restarts of children that met a half-built tree, ` : "") +
      `${r.violations.length} violations (seed ${r.seed}: node scripts/torture.mjs --runtimes ${r.runtime} --seed ${r.seed})`,
  );
  for (const v of r.violations) console.log(`  VIOLATION ${v}`);
}
if (totalViolations === 0 && !keep) rmSync(dir, { recursive: true, force: true });
else console.log(`stores kept in ${dir}`);
console.log(`${totalKills} kills, ${totalViolations} violations`);
process.exitCode = totalViolations > 0 ? 1 : 0;
