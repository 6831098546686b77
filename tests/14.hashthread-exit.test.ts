// runtimes: node
// A hash worker and the life of its process, in real Node and Deno
// children (tests/_support/hash-exit-child.ts): a blob stream dropped
// half-read does not keep the process running (Node: its worker is
// unref'd; Deno: the idle stop ends it after HASH_THREAD_IDLE_STOP_MS),
// and a digest that waits only on the worker keeps it running until the
// answer comes. Runs under Node only and drives both runtimes' children.
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { HASH_THREAD_IDLE_STOP_MS } from "../src/hashthread.ts";
import { referenceHex } from "./_support/blake3-reference.ts";
import { tempDir } from "./_support/tempdir.ts";

const test = suite("hashthread-exit");
/** The repository root: this file runs from dist/tests/ (Node) but the Deno child runs from tests/. */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const DENO_BIN = join(ROOT, "node_modules", ".bin", "deno");
/**
 * How long after "dropped" a child may take to end: the idle stop plus a
 * wide margin for a loaded machine. A worker that held its process would
 * hold it forever; this only tells that apart from ending.
 */
const EXIT_WITHIN_MS = HASH_THREAD_IDLE_STOP_MS + 5_000;
/** How long a child may take in all (Deno compiles the TypeScript at its first start). */
const CHILD_MAX_MS = 60_000;

interface ChildRun {
  code: number | null;
  lines: string[];
  stderr: string;
  /** ms from the child's first line to its exit. */
  afterFirstLine: number;
}

function runChild(runtime: "node" | "deno", args: string[]): Promise<ChildRun> {
  const [cmd, argv] = runtime === "node"
    ? [process.execPath, [join(ROOT, "dist", "tests", "_support", "hash-exit-child.js"), ...args]]
    : [DENO_BIN, ["run", "-A", "--quiet", join(ROOT, "tests", "_support", "hash-exit-child.ts"), ...args]];
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, argv, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
    const lines: string[] = [];
    let out = "";
    let stderr = "";
    let firstLineAt: number | undefined;
    const killer = setTimeout(() => proc.kill("SIGKILL"), CHILD_MAX_MS);
    proc.stdout!.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      let i;
      while ((i = out.indexOf("\n")) >= 0) {
        firstLineAt ??= performance.now();
        lines.push(out.slice(0, i));
        out = out.slice(i + 1);
      }
    });
    proc.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    proc.on("error", reject);
    proc.on("exit", (code) => {
      clearTimeout(killer);
      resolve({ code, lines, stderr, afterFirstLine: firstLineAt === undefined ? NaN : performance.now() - firstLineAt });
    });
  });
}

for (const runtime of ["node", "deno"] as const) {
  test(`${runtime}: a blob stream dropped half-read does not keep the process running`, async () => {
    const dir = tempDir("segstore-hashexit-");
    try {
      const run = await runChild(runtime, ["drop", join(dir.path, "store")]);
      assert.is(run.code, 0, `exit code (stderr: ${run.stderr.slice(0, 2000)})`);
      assert.equal(run.lines, ["dropped"]);
      assert.ok(run.afterFirstLine < EXIT_WITHIN_MS, `ended ${run.afterFirstLine.toFixed(0)} ms after dropping the stream`);
    } finally {
      dir.cleanup();
    }
  });

  test(`${runtime}: a digest waiting only on its worker keeps the process alive until it comes`, async () => {
    const run = await runChild(runtime, ["digest"]);
    assert.is(run.code, 0, `exit code (stderr: ${run.stderr.slice(0, 2000)})`);
    const bytes = new Uint8Array(40 * 1024 * 1024);
    for (let i = 0; i < 40; i++) bytes.fill(i, i * 1024 * 1024, (i + 1) * 1024 * 1024);
    assert.equal(run.lines, [`digest ${referenceHex(bytes)}`]);
  });
}

test.run();
