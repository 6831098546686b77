// runtimes: node
// flock(2) between processes, through the adapters: this suite runs under
// Node only and drives Node and Deno children itself
// (tests/_support/lock-child.ts, compiled to dist/ for Node).
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { tempDir, type TempDir } from "./_support/tempdir.ts";

/** The repository root: this file runs from dist/tests/ (Node) but the Deno child runs from tests/. */
const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const DENO_BIN = join(ROOT, "node_modules", ".bin", "deno");
const NODE_CHILD = join(ROOT, "dist", "tests", "_support", "lock-child.js");
const DENO_CHILD = join(ROOT, "tests", "_support", "lock-child.ts");
/** How long a child may take to answer: Deno's first start compiles the TypeScript. */
const CHILD_ANSWER_MS = 10_000;
/** How long a waiting child must stay blocked to count as blocked. */
const BLOCKED_CHECK_MS = 300;

type Runtime = "node" | "deno";

/** A running lock-child and the lines it printed. */
class Child {
  readonly proc: ChildProcess;
  readonly lines: string[] = [];
  #waiters: Array<() => void> = [];
  #stderr = "";
  exited: Promise<number | null>;

  constructor(readonly runtime: Runtime, path: string, mode: "exclusive" | "shared", wait: "wait" | "nowait") {
    const [cmd, args] = runtime === "node"
      ? [process.execPath, [NODE_CHILD, path, mode, wait]]
      : [DENO_BIN, ["run", "-A", "--quiet", DENO_CHILD, path, mode, wait]];
    this.proc = spawn(cmd, args, { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
    let buffered = "";
    this.proc.stdout!.setEncoding("utf8").on("data", (d: string) => {
      buffered += d;
      let i;
      while ((i = buffered.indexOf("\n")) >= 0) {
        this.lines.push(buffered.slice(0, i));
        buffered = buffered.slice(i + 1);
      }
      for (const w of this.#waiters.splice(0)) w();
    });
    this.proc.stderr!.setEncoding("utf8").on("data", (d: string) => (this.#stderr += d));
    this.exited = new Promise((resolve) => this.proc.on("exit", (code) => {
      for (const w of this.#waiters.splice(0)) w();
      resolve(code);
    }));
  }

  /** Waits until the child printed `line` (or one of `lines`), returning it; fails after CHILD_ANSWER_MS. */
  async expect(...wanted: string[]): Promise<string> {
    const deadline = Date.now() + CHILD_ANSWER_MS;
    for (;;) {
      const hit = this.lines.find((l) => wanted.includes(l));
      if (hit !== undefined) return hit;
      if (this.proc.exitCode !== null || Date.now() > deadline) {
        throw new Error(`${this.runtime} child: expected ${wanted.join("|")}, got ${JSON.stringify(this.lines)}; stderr: ${this.#stderr}`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }

  /** Ends stdin: a holder unlocks, says "released" and exits. */
  async release(): Promise<void> {
    this.proc.stdin!.end();
    await this.expect("released");
    await this.exited;
  }

  kill(): void {
    if (this.proc.exitCode === null) this.proc.kill("SIGKILL");
  }
}

/** Starts a child and waits for its verdict: "locked" or "busy". */
async function take(runtime: Runtime, path: string, mode: "exclusive" | "shared"): Promise<{ child: Child; result: string }> {
  const child = new Child(runtime, path, mode, "nowait");
  const result = await child.expect("locked", "busy");
  return { child, result };
}

const lock = suite<{ dir: TempDir; path: string; children: Child[] }>("flock between processes");

lock.before.each((ctx) => {
  ctx.dir = tempDir("segstore-21-");
  ctx.path = join(ctx.dir.path, "lock");
  writeFileSync(ctx.path, "");
  ctx.children = [];
});

lock.after.each(async (ctx) => {
  for (const c of ctx.children) c.kill();
  await Promise.all(ctx.children.map((c) => c.exited));
  ctx.dir.cleanup();
});

lock("the children exist: dist/ is built and deno is installed", () => {
  assert.ok(existsSync(NODE_CHILD), `${NODE_CHILD} (run tsc -p . first)`);
  assert.ok(existsSync(DENO_BIN), DENO_BIN);
});

lock("a second process cannot take an exclusive lock held by a first, and can once it released", async (ctx) => {
  const a = await take("node", ctx.path, "exclusive");
  ctx.children.push(a.child);
  assert.is(a.result, "locked");
  const b = await take("node", ctx.path, "exclusive");
  ctx.children.push(b.child);
  assert.is(b.result, "busy");
  await a.child.release();
  const c = await take("node", ctx.path, "exclusive");
  ctx.children.push(c.child);
  assert.is(c.result, "locked");
});

lock("a lock held by a process killed with SIGKILL is free again", async (ctx) => {
  const a = await take("node", ctx.path, "exclusive");
  ctx.children.push(a.child);
  assert.is(a.result, "locked");
  a.child.kill();
  assert.is(await a.child.exited, null, "killed by a signal, no exit code");
  const b = await take("node", ctx.path, "exclusive");
  ctx.children.push(b.child);
  assert.is(b.result, "locked");
});

lock("shared locks coexist and exclude an exclusive one", async (ctx) => {
  const a = await take("node", ctx.path, "shared");
  const b = await take("deno", ctx.path, "shared");
  ctx.children.push(a.child, b.child);
  assert.equal([a.result, b.result], ["locked", "locked"]);
  for (const runtime of ["node", "deno"] as const) {
    const x = await take(runtime, ctx.path, "exclusive");
    ctx.children.push(x.child);
    assert.is(x.result, "busy", `${runtime} exclusive vs shared`);
  }
  await a.child.release();
  await b.child.release();
  const x = await take("node", ctx.path, "exclusive");
  ctx.children.push(x.child);
  assert.is(x.result, "locked");
});

lock("a Node holder excludes a Deno taker, and a Deno holder a Node taker", async (ctx) => {
  for (const [holder, taker] of [["node", "deno"], ["deno", "node"]] as const) {
    const a = await take(holder, ctx.path, "exclusive");
    ctx.children.push(a.child);
    assert.is(a.result, "locked", `${holder} holder`);
    const b = await take(taker, ctx.path, "exclusive");
    ctx.children.push(b.child);
    assert.is(b.result, "busy", `${taker} taker vs ${holder} holder`);
    const s = await take(taker, ctx.path, "shared");
    ctx.children.push(s.child);
    assert.is(s.result, "busy", `${taker} shared taker vs ${holder} holder`);
    await a.child.release();
  }
});

lock("a waiting lock blocks until the holder releases, across runtimes", async (ctx) => {
  const a = await take("deno", ctx.path, "exclusive");
  ctx.children.push(a.child);
  assert.is(a.result, "locked");
  const waiter = new Child("node", ctx.path, "exclusive", "wait");
  ctx.children.push(waiter);
  await waiter.expect("ready node");
  await new Promise((r) => setTimeout(r, BLOCKED_CHECK_MS));
  assert.not.ok(waiter.lines.includes("locked"), "still waiting while the holder holds it");
  await a.child.release();
  assert.is(await waiter.expect("locked"), "locked");
});

lock.run();
