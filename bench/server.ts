/**
 * The server workloads W7-W9 (BENCH.md): a segstore server in this process
 * and its clients in child processes of the same runtime, over loopback
 * TCP with a token. Run by scripts/bench.mjs through the child protocol of
 * harness.ts; by hand:
 *
 *   node dist/bench/server.js --list
 *   node dist/bench/server.js --case W7/segstore --dir .bench-data/x --quick
 *
 * What is timed:
 *   W7  8 client processes each commit one-put transactions (100 B) in a
 *       loop for 10 s (2 s with --quick), started together; total commits/s
 *       and per-commit p50/p99. Beside it, W7/fs-limit: the raw "append
 *       100 B + fdatasync" rate of this disk, measured in the same process
 *       just before. Target: segstore >= 3x fs-limit (group commit).
 *   W8  one client process uploads a 1 GiB blob (64 MiB with --quick) from
 *       a generated stream: W8-upload is from putBlob's call to commit()'s
 *       return (the server has fdatasync'ed the blob and its record). Then
 *       a fresh client process downloads it: W8-download is from openBlob's
 *       call to the last byte of its stream (the blob fetched into the
 *       cache directory, verified with BLAKE3, fdatasync'ed, renamed, then
 *       read). Server and client peak RSS are reported (target < 150 MiB
 *       each). Beside them, W8-upload/fs-limit and W8-download/fs-limit:
 *       plain node:fs with the same bytes, in this process, just before:
 *       writing the file in 1 MiB chunks + fsync (what an upload ends in),
 *       and reading it back (page cache).
 *   W9  one client process issues 100,000 gets of 100 B values all at once
 *       (pipelined: the client keeps IN_FLIGHT_MAX in flight) and awaits
 *       them; gets/s. Every value is checked.
 */
import { spawn } from "node:child_process";
import { closeSync, fdatasyncSync, fsyncSync, mkdirSync, openSync, readSync, rmSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import {
  benchLine, benchMain, bytesEqual, diskUsageMb, keyAt, MB, nowMs, peakRssMb, percentile, RUNTIME, scriptArgs, valueAt,
  type BenchCase, type BenchLine, type CaseContext,
} from "./harness.ts";
import { connect, open, serve } from "../mod.ts";

// ---------------------------------------------------------------------------
// Sizes

/** W7: client processes, seconds of committing, value size. */
const W7_CLIENTS = 8;
const W7_SECONDS = 10;
const W7_SECONDS_QUICK = 2;
const W7_VALUE_BYTES = 100;
/** Appends + fdatasyncs that measure the raw rate beside W7. */
const W7_RAW_SYNCS = 500;
/** W8: the blob, and its chunk from the generated stream. */
const W8_BYTES = 1024 * MB;
const W8_BYTES_QUICK = 64 * MB;
const W8_CHUNK_BYTES = MB;
/** W9: gets, and the value size. */
const W9_GETS = 100_000;
const W9_GETS_QUICK = 20_000;
const W9_VALUE_BYTES = 100;
/** The token of every bench server. */
const TOKEN = "bench-token-0123456789abcdef";
/** How long a client child may take to start (Deno compiles the TypeScript on first start). */
const CHILD_START_MS = 60_000;

const ROOT = (() => {
  const here = dirname(fileURLToPath(import.meta.url));
  // dist/bench under Node, bench under Deno.
  return here.endsWith(join("dist", "bench")) ? join(here, "..", "..") : join(here, "..");
})();

// ---------------------------------------------------------------------------
// Client children: this file with --role, in the same runtime.

/** A client child: prints "ready", waits for "go" on stdin, works, prints one JSON line, exits. */
class ClientChild {
  readonly lines: string[] = [];
  stderr = "";
  /** Set once the process ended and all its output was read. */
  ended = false;
  readonly exited: Promise<number | null>;
  readonly proc;
  #waiters: (() => void)[] = [];

  constructor(args: string[]) {
    const deno = (globalThis as { Deno?: { execPath(): string } }).Deno;
    const [cmd, argv] = deno !== undefined
      ? [deno.execPath(), ["run", "-A", "--quiet", join(ROOT, "bench", "server.ts"), ...args]]
      : [process.execPath, [join(ROOT, "dist", "bench", "server.js"), ...args]];
    this.proc = spawn(cmd, argv, { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
    let buf = "";
    this.proc.stdout!.setEncoding("utf8").on("data", (d: string) => {
      buf += d;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        this.lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
      for (const w of this.#waiters.splice(0)) w();
    });
    this.proc.stderr!.setEncoding("utf8").on("data", (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => this.proc.on("close", (code) => {
      // "close" comes after the last output was read ("exit" may come before it).
      this.ended = true;
      for (const w of this.#waiters.splice(0)) w();
      resolve(code);
    }));
  }

  async expect(prefix: string, ms: number): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = this.lines.find((l) => l.startsWith(prefix));
      if (hit !== undefined) return hit;
      if (this.ended || Date.now() > deadline) {
        throw new Error(`bench client: expected "${prefix}", got ${JSON.stringify(this.lines)}; stderr: ${this.stderr.trim().split("\n").slice(-5).join(" | ")}`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 200);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  go(): void {
    this.proc.stdin!.write("go\n");
  }

  kill(): void {
    if (this.proc.exitCode === null) this.proc.kill("SIGKILL");
  }
}

function waitForGo(): Promise<void> {
  return new Promise((resolve) => {
    let buf = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (d: string) => {
      buf += d;
      if (buf.includes("go\n")) {
        process.stdin.pause();
        resolve();
      }
    });
  });
}

/** The client side of each workload, run in a child: `--role NAME URL ...`. */
async function clientMain(args: string[]): Promise<void> {
  const [role, url] = args;
  const remote = await connect(url!, { token: TOKEN, cacheDir: role === "w8-download" ? args[3] : undefined });
  let result: Record<string, unknown>;
  if (role === "w7") {
    const seconds = Number(args[2]);
    const index = Number(args[3]);
    const value = valueAt(index, W7_VALUE_BYTES);
    process.stdout.write("ready\n");
    await waitForGo();
    const latencies: number[] = [];
    const started = nowMs();
    const end = started + seconds * 1000;
    let i = 0;
    while (nowMs() < end) {
      const t = nowMs();
      await remote.put(keyAt(index * 10_000_000 + i), value);
      await remote.commit();
      latencies.push(nowMs() - t);
      i++;
    }
    result = { commits: i, ms: nowMs() - started, latencies: latencies.sort((a, b) => a - b).filter((_, k) => k % 10 === 0) };
  } else if (role === "w8-upload") {
    const bytes = Number(args[2]);
    process.stdout.write("ready\n");
    await waitForGo();
    let sent = 0;
    const source = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent >= bytes) {
          c.close();
          return;
        }
        const n = Math.min(W8_CHUNK_BYTES, bytes - sent);
        // Views into the generator's pool, as W6's source and the fs-limit row use: a copy here
        // (1 MiB allocated and filled per chunk, ~0.3 s of CPU per GiB) would time the generator.
        c.enqueue(valueAt(sent / W8_CHUNK_BYTES, n));
        sent += n;
      },
    }, { highWaterMark: 1 });
    const started = nowMs();
    await remote.putBlob(keyAt(0), source);
    await remote.commit();
    result = { ms: nowMs() - started, rss: peakRssMb() };
  } else if (role === "w8-download") {
    const bytes = Number(args[2]);
    process.stdout.write("ready\n");
    await waitForGo();
    const started = nowMs();
    const stream = await remote.openBlob(keyAt(0));
    if (stream === undefined) throw new Error("W8: the blob is missing");
    // A BYOB reader, as W6 reads: one buffer of ours is filled again and again.
    const reader = stream.getReader({ mode: "byob" });
    let buf = new Uint8Array(W8_CHUNK_BYTES);
    let got = 0;
    // The last 4 KiB seen, copied: a BYOB read hands the buffer back to the stream.
    const last = new Uint8Array(4096);
    for (;;) {
      const { done, value } = await reader.read(buf);
      if (done || value === undefined) break;
      got += value.length;
      if (value.length >= last.length) last.set(value.subarray(value.length - last.length));
      buf = new Uint8Array(value.buffer, 0, W8_CHUNK_BYTES);
    }
    const ms = nowMs() - started;
    if (got !== bytes) throw new Error(`W8: downloaded ${got} of ${bytes} bytes`);
    // The blob is verified (BLAKE3) by the client; check the tail against the generator too.
    const tail = valueAt((bytes - W8_CHUNK_BYTES) / W8_CHUNK_BYTES, W8_CHUNK_BYTES);
    if (!bytesEqual(last, tail.subarray(tail.length - last.length))) {
      throw new Error("W8: the downloaded blob's last bytes differ from what was uploaded");
    }
    result = { ms, rss: peakRssMb() };
  } else if (role === "w9") {
    const n = Number(args[2]);
    const keys = Array.from({ length: n }, (_, i) => keyAt(i));
    process.stdout.write("ready\n");
    await waitForGo();
    const started = nowMs();
    const values = await Promise.all(keys.map((k) => remote.get(k)));
    const ms = nowMs() - started;
    for (let i = 0; i < n; i += 97) {
      if (values[i] === undefined || !bytesEqual(values[i]!, valueAt(i, W9_VALUE_BYTES))) throw new Error(`W9: wrong value for key ${i}`);
    }
    if (values.some((v) => v === undefined)) throw new Error("W9: a get found nothing");
    result = { ms, rss: peakRssMb() };
  } else {
    throw new Error(`bench/server.ts: unknown role ${role}`);
  }
  await remote.close();
  process.stdout.write(`result ${JSON.stringify(result)}\n`);
}

// ---------------------------------------------------------------------------
// The server side

/** Opens a store in `dir` and serves it on 127.0.0.1 (any port) with TOKEN. */
async function serveStore(dir: string) {
  mkdirSync(dir, { recursive: true });
  const store = open(join(dir, "store"), { create: true });
  const server = await serve(store, { listen: "tcp://127.0.0.1:0", token: TOKEN });
  return {
    store, server,
    async close() {
      await server.close();
      store.close();
    },
  };
}

/** Starts clients with `argsOf(i)`, waits for all to be ready, says go, and returns their result lines. */
async function runClients(n: number, argsOf: (i: number) => string[], workMs: number): Promise<Record<string, unknown>[]> {
  const children = Array.from({ length: n }, (_, i) => new ClientChild(["--role", ...argsOf(i)]));
  try {
    await Promise.all(children.map((c) => c.expect("ready", CHILD_START_MS)));
    for (const c of children) c.go();
    const lines = await Promise.all(children.map((c) => c.expect("result ", workMs + CHILD_START_MS)));
    await Promise.all(children.map((c) => c.exited));
    return lines.map((l) => JSON.parse(l.slice("result ".length)) as Record<string, unknown>);
  } finally {
    for (const c of children) c.kill();
  }
}

/** The raw rate of "append 100 B, fdatasync" in `dir`, per second. */
function rawSyncRate(dir: string, n: number): number {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, "raw-syncs");
  const fd = openSync(path, "w+");
  const record = valueAt(0, W7_VALUE_BYTES);
  const started = nowMs();
  for (let i = 0; i < n; i++) {
    writeSync(fd, record, 0, record.length, i * record.length);
    fdatasyncSync(fd);
  }
  const elapsed = nowMs() - started;
  closeSync(fd);
  rmSync(path);
  return n / (elapsed / 1000);
}

async function runW7(ctx: CaseContext): Promise<BenchLine[]> {
  const seconds = ctx.quick ? W7_SECONDS_QUICK : W7_SECONDS;
  const raw = rawSyncRate(ctx.dir, ctx.quick ? W7_RAW_SYNCS / 5 : W7_RAW_SYNCS);
  const s = await serveStore(ctx.dir);
  let results: Record<string, unknown>[];
  try {
    results = await runClients(W7_CLIENTS, (i) => ["w7", s.server.url, String(seconds), String(i)], seconds * 1000);
  } finally {
    await s.close();
  }
  const stats = s.server.stats();
  const commits = results.reduce((n, r) => n + (r.commits as number), 0);
  const ms = Math.max(...results.map((r) => r.ms as number));
  const latencies = results.flatMap((r) => r.latencies as number[]).sort((a, b) => a - b);
  if (stats.commits !== commits) throw new Error(`W7: clients counted ${commits} commits, the server ${stats.commits}`);
  const perSync = stats.commits / stats.groupCommits;
  return [
    benchLine({
      workload: "W7", store: "segstore", n: commits, value_bytes: W7_VALUE_BYTES,
      ops_per_s: commits / (ms / 1000), peak_rss_mb: peakRssMb(), disk_mb: diskUsageMb(ctx.dir), durable: true,
      p50_ms: percentile(latencies, 50), p99_ms: percentile(latencies, 99),
      note: `${W7_CLIENTS} client processes over loopback TCP, one put per commit for ${seconds} s; ` +
        `${stats.groupCommits} store commits (fdatasyncs) carried ${stats.commits} client commits (${perSync.toFixed(1)} per fdatasync); ` +
        `${(commits / (ms / 1000) / raw).toFixed(2)}x the raw fdatasync rate`,
    }),
    benchLine({
      workload: "W7", store: "fs-limit", n: ctx.quick ? W7_RAW_SYNCS / 5 : W7_RAW_SYNCS, value_bytes: W7_VALUE_BYTES,
      ops_per_s: raw, durable: true, note: "node:fs writeSync of 100 B + fdatasyncSync, in the W7 process just before the clients",
    }),
  ];
}

/** Plain fs: `bytes` written in 1 MiB chunks + fsync, then read back; MB/s each. */
function plainFs(dir: string, bytes: number): { write: number; read: number } {
  const path = join(dir, "plain");
  const fd = openSync(path, "w+");
  const chunks = bytes / W8_CHUNK_BYTES;
  let started = nowMs();
  for (let k = 0; k < chunks; k++) {
    const c = valueAt(k, W8_CHUNK_BYTES);
    let done = 0;
    while (done < c.length) done += writeSync(fd, c, done, c.length - done, k * W8_CHUNK_BYTES + done);
  }
  fsyncSync(fd);
  const write = bytes / MB / ((nowMs() - started) / 1000);
  const buf = new Uint8Array(W8_CHUNK_BYTES);
  let pos = 0;
  started = nowMs();
  for (;;) {
    const n = readSync(fd, buf, 0, buf.length, pos);
    if (n === 0) break;
    pos += n;
  }
  const read = bytes / MB / ((nowMs() - started) / 1000);
  closeSync(fd);
  rmSync(path);
  return { write, read };
}

async function runW8(ctx: CaseContext): Promise<BenchLine[]> {
  const bytes = ctx.quick ? W8_BYTES_QUICK : W8_BYTES;
  mkdirSync(ctx.dir, { recursive: true });
  const plain = plainFs(ctx.dir, bytes);
  const s = await serveStore(ctx.dir);
  let up: Record<string, unknown>, down: Record<string, unknown>;
  try {
    [up] = await runClients(1, () => ["w8-upload", s.server.url, String(bytes)], 10 * 60_000);
    [down] = await runClients(1, () => ["w8-download", s.server.url, String(bytes), join(ctx.dir, "cache")], 10 * 60_000);
  } finally {
    await s.close();
  }
  const serverRss = peakRssMb();
  const stats = s.server.stats();
  if (stats.blobDownloads !== 1 || stats.blobBytesSent !== bytes) throw new Error(`W8: the server sent ${stats.blobBytesSent} bytes in ${stats.blobDownloads} downloads`);
  const rssNote = (client: unknown) => `server peak RSS ${serverRss.toFixed(0)} MB (peak_rss_mb), client peak RSS ${(client as number).toFixed(0)} MB`;
  const common = { store: "segstore", n: 1, value_bytes: bytes, peak_rss_mb: serverRss, durable: true };
  return [
    benchLine({
      ...common, workload: "W8-upload", mb_per_s: bytes / MB / ((up!.ms as number) / 1000), disk_mb: diskUsageMb(join(ctx.dir, "store")),
      note: `putBlob from a generated stream over loopback TCP, then commit (server fdatasyncs); ${rssNote(up!.rss)}; ` +
        `${((bytes / MB / ((up!.ms as number) / 1000)) / plain.write).toFixed(2)}x plain write+fsync`,
    }),
    benchLine({
      ...common, workload: "W8-download", mb_per_s: bytes / MB / ((down!.ms as number) / 1000), disk_mb: diskUsageMb(join(ctx.dir, "cache")),
      note: `openBlob into an empty cache (fetch, BLAKE3 verify, fdatasync, rename) and read the stream to its end; ${rssNote(down!.rss)}; ` +
        `${((bytes / MB / ((down!.ms as number) / 1000)) / plain.write).toFixed(2)}x plain write+fsync, ` +
        `${((bytes / MB / ((down!.ms as number) / 1000)) / plain.read).toFixed(3)}x plain read from the page cache`,
    }),
    benchLine({
      workload: "W8-upload", store: "fs-limit", n: 1, value_bytes: bytes, mb_per_s: plain.write, durable: true,
      note: "node:fs writeSync of 1 MiB chunks + fsyncSync, in the W8 process just before",
    }),
    benchLine({
      workload: "W8-download", store: "fs-limit", n: 1, value_bytes: bytes, mb_per_s: plain.read, durable: null,
      note: "node:fs readSync of 1 MiB chunks of the file just written: the page cache (a download also writes and fsyncs: compare with W8-upload/fs-limit too)",
    }),
  ];
}

async function runW9(ctx: CaseContext): Promise<BenchLine> {
  const n = ctx.quick ? W9_GETS_QUICK : W9_GETS;
  const s = await serveStore(ctx.dir);
  let result: Record<string, unknown>;
  try {
    for (let i = 0; i < n; i++) s.store.put(keyAt(i), valueAt(i, W9_VALUE_BYTES));
    s.store.commit();
    [result] = await runClients(1, () => ["w9", s.server.url, String(n)], 5 * 60_000);
  } finally {
    await s.close();
  }
  return benchLine({
    workload: "W9", store: "segstore", n, value_bytes: W9_VALUE_BYTES,
    ops_per_s: n / ((result!.ms as number) / 1000), peak_rss_mb: peakRssMb(), disk_mb: diskUsageMb(ctx.dir), durable: null,
    note: `${n} gets issued at once by one client process over loopback TCP (pipelined, up to 1024 in flight), each value checked; ` +
      `client peak RSS ${(result!.rss as number).toFixed(0)} MB`,
  });
}

const SERVER_CASES: readonly BenchCase[] = [
  { workload: "W7", store: "segstore", run: runW7 },
  { workload: "W8", store: "segstore", run: runW8 },
  { workload: "W9", store: "segstore", run: runW9 },
];

const args = scriptArgs();
if (args[0] === "--role") {
  try {
    await clientMain(args.slice(1));
    process.exit(0);
  } catch (e) {
    process.stderr.write(`bench client (${RUNTIME}): ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  }
} else {
  await benchMain(SERVER_CASES);
}
