/**
 * Test helpers for the 70.net-* suites: a store served on a real socket
 * (TCP on 127.0.0.1 or a unix socket) in this process, deterministic ids,
 * and child processes (tests/_support/net-client.ts) of either runtime that
 * talk to it, so tests can kill a client mid-transfer.
 *
 * @example
 * const h = await startServer({ transport: "tcp" });
 * const remote = await h.connect();
 * try { ... } finally { await h.close(); }
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { runtimeFs } from "../../adapters/runtime.ts";
import { Store, type OpenOptions } from "../../src/store.ts";
import { connect, type ConnectOptions, type RemoteStore } from "../../src/net/client.ts";
import { serve, type ServerHandle } from "../../src/net/server.ts";
import { tempDir, type TempDir } from "./tempdir.ts";

/** The token every test server uses over TCP. */
export const TOKEN = "net-test-token-0123456789abcdef";

/** The repository root, found from this file (dist/tests/_support under Node, tests/_support under Deno). */
export const ROOT = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) dir = dirname(dir);
  return dir;
})();

export type Runtime = "node" | "deno";
/** The runtime running this test file. */
export const RUNTIME: Runtime = "Deno" in globalThis ? "deno" : "node";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A deterministic 32-byte id for n (as tests/40.store does). */
export function key(n: number): Uint8Array {
  return enc.encode(String(n).padEnd(32, " "));
}
export function val(s: string): Uint8Array {
  return enc.encode(s);
}
export function text(v: Uint8Array | undefined): string | undefined {
  return v === undefined ? undefined : dec.decode(v);
}
/** Lower-case hex of bytes. */
export function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}
export function fromHex(h: string): Uint8Array {
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** `n` deterministic pseudo-random bytes (xorshift), the same in every process for the same seed. */
export function pseudoRandomBytes(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  const words = new Uint32Array(out.buffer, 0, Math.floor(n / 4));
  let x = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    words[i] = x;
  }
  for (let i = words.length * 4; i < n; i++) out[i] = i & 0xff;
  return out;
}

/** A ReadableStream over `bytes` in chunks of `chunk` bytes. */
export function streamOf(bytes: Uint8Array, chunk = 256 * 1024): ReadableStream<Uint8Array> {
  let pos = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (pos >= bytes.length) {
        c.close();
        return;
      }
      c.enqueue(bytes.slice(pos, pos + chunk));
      pos += chunk;
    },
  });
}

/** Reads a stream to its end into one array. */
export async function readAllStream(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    n += value.length;
  }
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A served store and what a test needs around it. */
export interface ServedStore {
  readonly dir: TempDir;
  readonly storePath: string;
  store: Store;
  server: ServerHandle;
  readonly url: string;
  readonly token: string | undefined;
  /** Connects a client (the server's token unless options say otherwise). */
  connect(options?: ConnectOptions): Promise<RemoteStore>;
  /** Closes the server and the store, then opens the store and serves it again at a new address. */
  restart(): Promise<void>;
  /** Closes every client connected through `connect`, the server, the store, and removes the directory. */
  close(): Promise<void>;
}

/**
 * Creates a store in a fresh temp directory and serves it on 127.0.0.1
 * (any free port, with TOKEN) or a unix socket in the directory.
 */
export async function startServer(options: { transport?: "tcp" | "unix"; storeOptions?: OpenOptions } = {}): Promise<ServedStore> {
  const transport = options.transport ?? "tcp";
  const dir = tempDir("segstore-net-");
  const storePath = join(dir.path, "store");
  const listen = () => (transport === "tcp" ? "tcp://127.0.0.1:0" : `unix:${join(dir.path, "s.sock")}`);
  const token = transport === "tcp" ? TOKEN : undefined;
  const clients: RemoteStore[] = [];
  let store = Store.open(storePath, { create: true, fs: runtimeFs, ...options.storeOptions });
  let server = await serve(store, token === undefined ? { listen: listen() } : { listen: listen(), token });
  const served: ServedStore = {
    dir, storePath, token,
    get store() { return store; },
    get server() { return server; },
    get url() { return server.url; },
    async connect(o: ConnectOptions = {}) {
      const c = await connect(server.url, { fs: runtimeFs, ...(token === undefined ? {} : { token }), ...o });
      clients.push(c);
      return c;
    },
    async restart() {
      await server.close();
      store.close();
      store = Store.open(storePath, { fs: runtimeFs, ...options.storeOptions });
      server = await serve(store, token === undefined ? { listen: listen() } : { listen: listen(), token });
    },
    async close() {
      for (const c of clients) await c.close().catch(() => {});
      await server.close();
      store.close();
      dir.cleanup();
    },
  } as ServedStore;
  return served;
}

/** Waits until `cond()` holds, polling; throws with `what` after `ms`. */
export async function waitFor(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

// ---------------------------------------------------------------------------
// Child processes

const DENO_BIN = join(ROOT, "node_modules", ".bin", "deno");
/** How long a child may take to print an expected line: Deno's first start compiles the TypeScript. */
export const CHILD_ANSWER_MS = 30_000;

/** A running tests/_support/net-client.ts and the lines it printed. */
export class NetChild {
  readonly proc: ChildProcess;
  readonly lines: string[] = [];
  stderr = "";
  /** Set once the process ended and all its output was read. */
  ended = false;
  readonly exited: Promise<number | null>;
  #waiters: (() => void)[] = [];

  constructor(readonly runtime: Runtime, args: string[]) {
    const [cmd, argv] = runtime === "node"
      ? [process.execPath, [join(ROOT, "dist", "tests", "_support", "net-client.js"), ...args]]
      : [DENO_BIN, ["run", "-A", "--quiet", join(ROOT, "tests", "_support", "net-client.ts"), ...args]];
    this.proc = spawn(cmd, argv, { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } });
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
    this.proc.stderr!.setEncoding("utf8").on("data", (d: string) => (this.stderr += d));
    this.exited = new Promise((resolve) => this.proc.on("close", (code) => {
      // "close" comes after the last output was read ("exit" may come before it).
      this.ended = true;
      for (const w of this.#waiters.splice(0)) w();
      resolve(code);
    }));
  }

  /** Waits for a line starting with `prefix`; returns it. */
  async expect(prefix: string, ms = CHILD_ANSWER_MS): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const hit = this.lines.find((l) => l.startsWith(prefix));
      if (hit !== undefined) return hit;
      if (this.ended || Date.now() > deadline) {
        throw new Error(`${this.runtime} net-client: expected "${prefix}…", got ${JSON.stringify(this.lines)}; stderr: ${this.stderr}`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, Math.min(200, deadline - Date.now())));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  send(line: string): void {
    this.proc.stdin!.write(line + "\n");
  }

  /** SIGKILL: no cleanup of any kind runs in the child. */
  async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill("SIGKILL");
    await this.exited;
  }
}

/** Awaits `fn()` and asserts it rejects with an error `check` accepts (uvu's assert has no async form). */
export async function rejects(fn: () => Promise<unknown>, check: (e: unknown) => boolean, what = "the call"): Promise<void> {
  let error: unknown;
  try {
    await fn();
  } catch (e) {
    error = e;
  }
  if (error === undefined) throw new Error(`${what} should have been rejected`);
  if (!check(error)) throw new Error(`${what} rejected with an unexpected error: ${(error as Error)?.constructor?.name}: ${(error as Error)?.message ?? error}`);
}
