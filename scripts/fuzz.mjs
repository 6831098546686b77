#!/usr/bin/env node
// The long fuzz run (`npm run fuzz`): at least 100,000 seeded random and
// mutated inputs per decoder that reads untrusted bytes (segment scanner,
// index checkpoint loader, hints decoder, wire protocol), each against its
// contract (tests/_support/fuzz-targets.ts), then the length-claim cases.
// Prints per decoder the inputs run, how many it accepted and refused, the
// slowest input and the time taken; exits 1 on any broken contract.
//
//   node scripts/fuzz.mjs [--count N] [--seed S] [--target NAME]
//
// Each decoder runs in a worker thread with a watchdog: a worker that
// reports no progress for WATCHDOG_MS is hung, and is stopped and reported
// with the seed and the input it was on. Without --seed the seed is drawn
// from the clock (and printed), so every run explores new inputs; a failure
// prints the command that replays it.
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { existsSync } from "node:fs";
import { fileURLToPath, pathToFileURL } from "node:url";
import { dirname, join } from "node:path";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const TARGETS_JS = join(ROOT, "dist", "tests", "_support", "fuzz-targets.js");
/** Inputs per decoder unless --count says more (the brief's floor). */
const COUNT_DEFAULT = 100_000;
/** A worker silent this long is hung: progress comes every 1,024 inputs, each bounded by FUZZ_INPUT_MS_MAX. */
const WATCHDOG_MS = 60_000;

if (!isMainThread) {
  const { fuzzRun, fuzzTargets } = await import(pathToFileURL(TARGETS_JS).href);
  const target = fuzzTargets().find((t) => t.name === workerData.name);
  try {
    const stats = fuzzRun(target, {
      seed: workerData.seed, count: workerData.count,
      onProgress: (done) => parentPort.postMessage({ kind: "progress", done }),
    });
    parentPort.postMessage({ kind: "done", stats });
  } catch (e) {
    const input = e.input instanceof Uint8Array ? Buffer.from(e.input.subarray(0, 256)).toString("hex") : "";
    parentPort.postMessage({ kind: "violation", message: e.message, index: e.index, cause: e.cause ? String(e.cause.stack ?? e.cause) : "", input });
  }
} else {
  const args = process.argv.slice(2);
  const opt = (name, fallback) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : fallback;
  };
  const count = Math.max(Number(opt("count", COUNT_DEFAULT)), 1);
  const seed = Number(opt("seed", Date.now() % 2 ** 31));
  const only = opt("target", undefined);
  if (!existsSync(TARGETS_JS)) {
    console.error(`fuzz: ${TARGETS_JS} is missing; build first (npm run build)`);
    process.exit(2);
  }
  const { fuzzTargets, claimDecoders, decodeClaimCases, refusedBeforeAllocating } = await import(pathToFileURL(TARGETS_JS).href);
  const names = fuzzTargets().map((t) => t.name).filter((n) => only === undefined || n === only);
  if (names.length === 0) {
    console.error(`fuzz: no target ${only}; targets: ${fuzzTargets().map((t) => t.name).join(", ")}`);
    process.exit(2);
  }
  console.log(`fuzz: seed ${seed}, ${count} inputs per decoder`);
  let failed = 0;
  for (const name of names) {
    const t0 = Date.now();
    const result = await new Promise((resolve) => {
      const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { name, seed, count } });
      let done = 0;
      let timer;
      const arm = () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          worker.terminate();
          resolve({ kind: "violation", message: `hung: no progress for ${WATCHDOG_MS} ms after input ${done}`, index: done, input: "" });
        }, WATCHDOG_MS);
      };
      arm();
      worker.on("message", (m) => {
        if (m.kind === "progress") {
          done = m.done;
          arm();
          return;
        }
        clearTimeout(timer);
        worker.terminate();
        resolve(m);
      });
      worker.on("error", (e) => {
        clearTimeout(timer);
        resolve({ kind: "violation", message: `crashed: ${e.stack ?? e}`, index: done, input: "" });
      });
    });
    const secs = ((Date.now() - t0) / 1000).toFixed(1);
    if (result.kind === "done") {
      const s = result.stats;
      console.log(
        `${name.padEnd(18)} ${String(s.inputs).padStart(8)} inputs  ${String(s.accepted).padStart(8)} accepted  ` +
          `${String(s.rejected).padStart(8)} refused  slowest ${s.slowestMs.toFixed(1)} ms  ${secs} s`,
      );
    } else {
      failed++;
      console.log(`${name.padEnd(18)} VIOLATION: ${result.message}`);
      if (result.cause) console.log(result.cause.split("\n").slice(0, 8).join("\n"));
      if (result.input) console.log(`  input (first 256 bytes, hex): ${result.input}`);
      console.log(`  replay: SEGSTORE_FUZZ_SEED=${seed} SEGSTORE_FUZZ_COUNT=${result.index + 1} node dist/tests/95.fuzz.test.js`);
    }
  }
  for (const decoder of claimDecoders()) {
    const allocated = [];
    for (const c of decodeClaimCases()) {
      const error = decoder.decode(c.bytes);
      if (!refusedBeforeAllocating(c.name, error)) allocated.push(`${c.name}: ${error ? error.message : "decoded"}`);
    }
    if (allocated.length > 0) failed++;
    console.log(
      `${decoder.name.padEnd(22)} length claims: ` +
        (allocated.length === 0 ? "each refused by a length limit" : `VIOLATION, not refused by a length limit: ${allocated.join("; ")}`),
    );
  }
  console.log(failed === 0 ? "fuzz: every contract held" : `fuzz: ${failed} contract(s) broken`);
  process.exit(failed === 0 ? 0 : 1);
}
