/**
 * The parent of the kill -9 torture: spawns the writer child
 * (torture-writer.ts) on a real store, kills it with SIGKILL at a random
 * moment, has a checker child of the same runtime (torture-check.ts) open
 * what is left, and holds that against the model (torture-model.ts): every
 * acknowledged transaction whole, the one in flight whole or absent,
 * nothing else, and store.check() clean. Then the next writer opens the
 * store (recovering it, and sometimes being killed while it does).
 *
 * Used by tests/91.torture (a few seconds per runtime) and
 * scripts/torture.mjs (`npm run torture -- --seconds N`).
 *
 * Replaying a failure: the seed fixes every writer's workload and every
 * kill delay; the moment a kill lands within the writer's work still
 * depends on timing, so a seed reproduces the run, not always the failure.
 *
 * @example
 * const result = await torture({ runtime: "node", dir: "/tmp/t", seed: 1, kills: 20 });
 * if (result.violations.length) console.log(result.violations[0]);
 */
import { spawn } from "node:child_process";
import process from "node:process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SeededRandom } from "../../adapters/faulty.ts";
import { CommitModel, type Effects, type Observed } from "./torture-model.ts";

/** Options of `torture()`. */
export interface TortureOptions {
  runtime: "node" | "deno";
  /** The store's directory (created by the first writer if missing). */
  store: string;
  /** Seed of the writers' workloads and of the kill delays. */
  seed: number;
  /** Stop after this many kills... */
  kills?: number;
  /** ...or after this many seconds, whichever comes first (at least one must be given). */
  seconds?: number;
  /** Progress lines (one per `progressEvery` kills); default none. */
  log?: (line: string) => void;
  progressEvery?: number;
}

/** What a torture run did and found. */
export interface TortureResult {
  runtime: string;
  seed: number;
  kills: number;
  /** Acknowledged commits, over all writers. */
  commits: number;
  compactions: number;
  reopens: number;
  /** Kills that landed while a commit was in flight, and how that commit came out. */
  inflightLanded: number;
  inflightLost: number;
  /** Kills before the writer's store was open (during open and recovery). */
  killsDuringOpen: number;
  /** Children restarted because they could not load their modules (the tree was being rebuilt). */
  loadRetries: number;
  /** Model violations and child failures; the run stops at the first. */
  violations: string[];
  ms: number;
}

/** Share of kills aimed at the writer's startup (open and recovery) rather than its workload. */
const KILL_EARLY_SHARE = 0.2;
/** Longest delay after the writer's "ready" before the kill, in ms. */
const KILL_DELAY_MAX_MS = 400;
/**
 * A child that dies before its first line with a module-loading error (SyntaxError, a missing module or
 * export) met a half-written dist/ or source file: other work rebuilding the tree while the torture runs.
 * That is retried after LOAD_RETRY_DELAY_MS, up to this many times in a row, then reported like any failure.
 */
const LOAD_RETRIES_MAX = 10;
const LOAD_RETRY_DELAY_MS = 2000;

/** True when a child's output says it never got as far as running (see LOAD_RETRIES_MAX). */
function loadFailure(stdout: string, stderr: string): boolean {
  return stdout.trim() === "" && /SyntaxError|ERR_MODULE_NOT_FOUND|does not provide an export|Module not found|Cannot find module/.test(stderr);
}

/** A child that takes longer than this (a hang) is a failure. */
const CHILD_TIMEOUT_MS = 60_000;

const HERE = fileURLToPath(new URL(".", import.meta.url));
/** The package root: this file is tests/_support/ in source, dist/tests/_support/ when compiled. */
const ROOT = join(HERE, HERE.includes("/dist/tests/") ? "../../.." : "../..");

function childCommand(runtime: "node" | "deno", script: "torture-writer" | "torture-check", args: string[]): [string, string[]] {
  if (runtime === "node") {
    const nodeBin = typeof (globalThis as { Deno?: unknown }).Deno === "undefined" ? process.execPath : "node";
    return [nodeBin, [join(ROOT, "dist", "tests", "_support", `${script}.js`), ...args]];
  }
  const denoBin = join(ROOT, "node_modules", ".bin", "deno");
  if (!existsSync(denoBin)) throw new Error(`no deno binary at ${denoBin} (run npm install)`);
  return [denoBin, ["run", "-A", "--quiet", join(ROOT, "tests", "_support", `${script}.ts`), ...args]];
}

/** One writer's life: the complete lines it printed, how it ended, and its stderr. */
interface WriterRun {
  /** Complete lines it printed. */
  lines: number;
  signal: string | null;
  code: number | null;
  stderr: string;
  readyAt: number | undefined;
}

/**
 * Spawns a writer, feeds each complete stdout line to `onLine` as it
 * arrives, and kills it `delay` ms after its first "ready" (or after spawn
 * when `early`).
 */
function runWriter(
  runtime: "node" | "deno", store: string, seed: number, early: boolean, delay: number, onLine: (line: string) => void,
): Promise<WriterRun> {
  const [cmd, args] = childCommand(runtime, "torture-writer", [store, String(seed)]);
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let pending = "";
    let stderr = "";
    let readyAt: number | undefined;
    let lines = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const kill = () => child.kill("SIGKILL");
    if (early) timer = setTimeout(kill, delay);
    const hang = setTimeout(() => {
      stderr += `\n[torture: writer still running after ${CHILD_TIMEOUT_MS} ms: killed]`;
      kill();
    }, CHILD_TIMEOUT_MS);
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (data: string) => {
      pending += data;
      let nl: number;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (line.startsWith("ready ") && readyAt === undefined) {
          readyAt = Date.now() - started;
          if (!early) timer = setTimeout(kill, delay);
        }
        lines++;
        onLine(line);
      }
    });
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (data: string) => (stderr += data));
    // 'close', not 'exit': every line the child wrote has been read by then.
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      clearTimeout(hang);
      resolve({ lines, code, signal, stderr, readyAt });
    });
  });
}

/** Runs the checker child; its one JSON line, parsed. */
function runCheck(runtime: "node" | "deno", store: string): Promise<{ observed?: Observed; problems?: string[]; error?: string; loadFailed?: boolean }> {
  const [cmd, args] = childCommand(runtime, "torture-check", [store]);
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    const hang = setTimeout(() => child.kill("SIGKILL"), CHILD_TIMEOUT_MS);
    child.stdout!.setEncoding("utf8");
    child.stdout!.on("data", (d: string) => (out += d));
    child.stderr!.setEncoding("utf8");
    child.stderr!.on("data", (d: string) => (err += d));
    child.on("close", (code, signal) => {
      clearTimeout(hang);
      let parsed: { lastTxid?: string; content?: [number, string][]; foreign?: string[]; problems?: string[]; error?: string };
      try {
        parsed = JSON.parse(out.trim().split("\n").pop() ?? "");
      } catch {
        resolve({ error: `checker exited (${code ?? signal}) without a report: ${out.slice(0, 500)} ${err.slice(0, 2000)}`, loadFailed: loadFailure(out, err) });
        return;
      }
      if (parsed.error !== undefined) {
        resolve({ error: parsed.error });
        return;
      }
      resolve({
        observed: { lastTxid: BigInt(parsed.lastTxid!), content: new Map(parsed.content!), foreign: parsed.foreign! },
        problems: parsed.problems!,
      });
    });
  });
}

/**
 * Kill, check, repeat: see the top of this file.
 *
 * @example
 * const r = await torture({ runtime: "deno", store: "/tmp/t/store", seed: 7, seconds: 60 });
 */
export async function torture(options: TortureOptions): Promise<TortureResult> {
  if (options.kills === undefined && options.seconds === undefined) throw new TypeError("torture: give kills or seconds");
  const started = Date.now();
  const deadline = options.seconds === undefined ? Infinity : started + options.seconds * 1000;
  const random = new SeededRandom(options.seed);
  const model = new CommitModel();
  const result: TortureResult = {
    runtime: options.runtime, seed: options.seed, kills: 0, commits: 0, compactions: 0, reopens: 0,
    inflightLanded: 0, inflightLost: 0, killsDuringOpen: 0, loadRetries: 0, violations: [], ms: 0,
  };
  /** Consecutive writer starts that failed to load (see LOAD_RETRIES_MAX). */
  let loadRetries = 0;
  /** Running estimate of the writer's startup time, to aim early kills at its open. */
  let startupMs = options.runtime === "deno" ? 250 : 150;

  for (let i = 0; result.kills < (options.kills ?? Infinity) && Date.now() < deadline; i++) {
    const writerSeed = (options.seed * 100_003 + i) % 2 ** 31;
    const early = random.next() < KILL_EARLY_SHARE;
    const delay = early ? random.below(Math.ceil(startupMs * 1.3)) : random.below(KILL_DELAY_MAX_MS);
    const where = `runtime ${options.runtime}, seed ${options.seed}, kill ${i + 1} (writer seed ${writerSeed}, ${early ? "early" : "after ready"} +${delay} ms), store ${options.store}`;
    let lineProblem: string | undefined;
    const onLine = (line: string) => {
      if (lineProblem !== undefined) return;
      const [kind, arg, ...rest] = line.split(" ");
      try {
        if (kind === "ready") {
          if (BigInt(arg!) !== model.txid) lineProblem = `the writer opened the store at txid ${arg}, the model is at ${model.txid}`;
        } else if (kind === "begin") {
          const effects: Effects = new Map(JSON.parse(rest.join(" ")) as [number, string | null][]);
          model.beginCommit(BigInt(arg!), effects);
        } else if (kind === "ok") {
          model.ack(BigInt(arg!));
          result.commits++;
        } else if (kind === "compact") {
          model.beginCompact();
        } else if (kind === "compacted") {
          model.ackCompact(BigInt(arg!));
          result.compactions++;
        } else if (kind === "reopen") {
          result.reopens++;
        } else {
          lineProblem = `the writer printed an unknown line: ${line.slice(0, 200)}`;
        }
      } catch (e) {
        lineProblem = `the writer's line ${line.slice(0, 200)} broke the model: ${(e as Error).message}`;
      }
    };
    const run = await runWriter(options.runtime, options.store, writerSeed, early, delay, onLine);
    if (run.readyAt !== undefined) startupMs = 0.8 * startupMs + 0.2 * run.readyAt;
    if (run.signal !== "SIGKILL" && run.lines === 0 && loadFailure("", run.stderr) && loadRetries < LOAD_RETRIES_MAX) {
      loadRetries++;
      result.loadRetries++;
      await new Promise((r) => setTimeout(r, LOAD_RETRY_DELAY_MS));
      continue;
    }
    if (run.signal !== "SIGKILL") {
      result.violations.push(`${where}: the writer ended by itself (code ${run.code}, signal ${run.signal}): ${run.stderr.slice(0, 3000)}`);
      break;
    }
    result.kills++;
    if (run.readyAt === undefined) result.killsDuringOpen++;
    if (lineProblem !== undefined) {
      result.violations.push(`${where}: ${lineProblem}`);
      break;
    }
    const inflight = model.inflight;
    let check = await runCheck(options.runtime, options.store);
    for (let retry = 0; check.loadFailed && retry < LOAD_RETRIES_MAX; retry++) {
      result.loadRetries++;
      await new Promise((r) => setTimeout(r, LOAD_RETRY_DELAY_MS));
      check = await runCheck(options.runtime, options.store);
    }
    loadRetries = 0;
    if (check.error !== undefined) {
      result.violations.push(`${where}: the checker could not read the store: ${check.error.slice(0, 3000)}`);
      break;
    }
    const problem = model.verify(check.observed!);
    if (problem !== undefined) {
      result.violations.push(`${where}: ${problem}`);
      break;
    }
    if (check.problems!.length > 0) {
      result.violations.push(`${where}: store.check() found: ${check.problems!.slice(0, 5).join("; ")}`);
      break;
    }
    if (inflight?.kind === "commit") {
      result.inflightLanded++;
      if (check.observed!.lastTxid !== inflight.txid) result.inflightLost++;
    }
    model.adopt(check.observed!);
    if (options.log && options.progressEvery && result.kills % options.progressEvery === 0) {
      options.log(
        `${options.runtime}: ${result.kills} kills, ${result.commits} commits acknowledged, ${model.content.size} keys, txid ${model.txid}, ` +
          `${((Date.now() - started) / 1000).toFixed(0)} s`,
      );
    }
  }
  result.ms = Date.now() - started;
  return result;
}
