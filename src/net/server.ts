/**
 * The server: owns one open Store and serves it to any number of clients
 * over TCP or a unix socket (docs/protocol.md is the wire contract).
 *
 * Map: options and stats · `serve()` · `Server` (connections, the group
 * commit, invalidations, close) · `Session` (one connection: hello and
 * authentication, dispatch, reads, the staged transaction, vote / finish /
 * abort, blob uploads and downloads, teardown).
 *
 * ## How a commit flows
 * A client stages its writes (`write`, `uploadStart`/`uploadChunk`/
 * `uploadEnd`, `uploadName`) in its session, then calls `vote`: the server
 * checks each written key's serial (serials.ts) and reserves the keys, or
 * answers ConflictError and drops the staged writes. `finish` queues the
 * session for the next group commit: every session queued by the time the
 * event loop comes round has its writes applied into ONE store
 * transaction, committed with one `store.commit()` (one fdatasync); each
 * gets the same txid back, and every other client is sent an `invalidate`
 * push with the keys that changed. Commits arriving while one is being
 * written wait for the next group, so under load each fdatasync carries
 * every commit that arrived during the previous one.
 *
 * ## Invariants
 * 1. The store has no open transaction except inside `Server.#groupCommit`,
 *    which runs synchronously from the first write to the commit (blobs
 *    are staged on disk before, and only attached there), so no read of
 *    any client sees uncommitted writes.
 * 2. A key is reserved by at most one voted transaction; reserved keys are
 *    released when that transaction commits, fails or is aborted, or its
 *    connection closes before `finish`.
 * 3. Every staged blob file (blobs.ts `putBlobStage`) is owned by exactly
 *    one session until a group commit attaches it to the store's
 *    transaction; the session discards it on abort, replacement, a failed
 *    vote or disconnect. An upload in progress is failed on disconnect,
 *    which makes `putBlobStage` remove its temp file.
 */
import type { Connection, File, FileSystem, Listener } from "../fs.ts";
import { isFsError } from "../fs.ts";
import { putBlobAttach, putBlobDiscard, putBlobStage, type StagedBlob } from "../blobs.ts";
import {
  assert, ConflictError, IntegrityError, INDEX_BLOB_FLAG, INDEX_SIZE_MASK, KEY_SIZE, MAX_OBJECT_SIZE, NotFoundError,
  PUT_HEADER_SIZE, SegstoreError, StateError, StorageError,
} from "../format.ts";
import { joinPath } from "../paths.ts";
import { idHex, type Store } from "../store.ts";
import { ChunkQueue } from "./chunkqueue.ts";
import { authProof, proofsEqual, randomNonce, tokenBytes } from "./auth.ts";
import { Channel, OUTPUT_HIGH_WATER_BYTES } from "./channel.ts";
import {
  argBytes, argCount, argId, argMap, argMsgid, argSerial, AUTH_NONCE_SIZE, authError, BLOB_CHUNK_SIZE,
  chunkHeaderSize, describe, errorToWire, FRAME_SIZE_MAX, HELLO_TIMEOUT_MS, IN_FLIGHT_MAX, keyString, LIST_CHUNK_IDS,
  msgidOf, parseCall, PROTOCOL_VERSION, protocolError, TRANSACTION_BYTES_MAX, TRANSACTION_WRITES_MAX,
  UPLOAD_NAME_PATTERN, writeChunkHeader,
} from "./protocol.ts";
import { SerialTable } from "./serials.ts";

// ---------------------------------------------------------------------------
// Limits

/** Bytes of values one `getMany` reply carries; values past it are answered `true` ("ask for it alone"). */
export const GET_MANY_REPLY_BYTES = 8 * 1024 * 1024;
/** Ids one `getMany` call may ask for. */
export const GET_MANY_IDS_MAX = LIST_CHUNK_IDS;
/** A session that committed within this many milliseconds counts as active: the group commit may wait for it. */
export const GROUP_COMMIT_ACTIVE_MS = 50;
/** Longest a group commit waits for active sessions to join it (also capped by the last commit's duration). */
export const GROUP_COMMIT_WAIT_MAX_MS = 2;
/**
 * The group commit waits for stragglers only when clients' turnaround (reply
 * to next commit) is at most this share of a commit's duration: then one
 * short wait can double a group. When turnaround is as slow as the disk (a
 * loaded machine), waiting only lengthens every cycle.
 */
export const GROUP_COMMIT_WAIT_WORTH = 0.5;
/** Weight of the newest sample in the turnaround moving average. */
const TURNAROUND_EWMA_WEIGHT = 0.1;
/** The coarsest a timer may fire (Node and Deno round setTimeout to whole milliseconds). */
const TIMER_RESOLUTION_MS = 1;
/** A failed authentication is answered after this delay, to slow down guessing. */
export const AUTH_FAILURE_DELAY_MS = 200;
/**
 * Unsent output (replies and pushes not yet handed to the kernel) past
 * which a connection is dropped when an `invalidate` push is due for it.
 * What a client asks for is bounded without this: the server stops reading
 * a connection whose output is over OUTPUT_HIGH_WATER_BYTES (8 MiB), so
 * replies and the pushes of calls stay under that plus one message (a
 * FRAME_SIZE_MAX value, 16 MiB + 64 KiB). Invalidations are not asked for:
 * every other client's commit adds one, so a client that stopped reading
 * (hung, suspended, or hostile) would make the server buffer them without
 * end. Past this, it is closed instead; the client sees a lost connection
 * (its cache can no longer be kept coherent). `serve`'s `outputQueueMax`.
 */
export const OUTPUT_QUEUE_MAX_BYTES = 64 * 1024 * 1024;

/**
 * Options of `serve()`.
 *
 * @example
 * const server = await serve(store, { listen: "tcp://127.0.0.1:0", token: "a long random secret" });
 */
export interface ServeOptions {
  /** "tcp://HOST:PORT" (PORT 0: any free port) or "unix:/absolute/path". Required. */
  listen: string;
  /** The shared secret clients must prove they know. Required for tcp://; optional for unix: (the socket is owner-only). */
  token?: string | Uint8Array;
  /** Milliseconds a connection has to complete the hello before it is closed. Default HELLO_TIMEOUT_MS (10 s). */
  helloTimeout?: number;
  /**
   * Bytes of unsent output past which a connection that is due an
   * `invalidate` push is dropped. Default OUTPUT_QUEUE_MAX_BYTES (64 MiB);
   * under 8 MiB + FRAME_SIZE_MAX it may drop a client that is only slow.
   */
  outputQueueMax?: number;
}

const SERVE_OPTION_NAMES = ["listen", "token", "helloTimeout", "outputQueueMax"];

/** What `stats()` of a running server reports (counts since it started). */
export interface ServerStats {
  url: string;
  /** Connections open now, and ever accepted. */
  connections: number;
  connectionsTotal: number;
  /** Connections refused at the hello (bad proof, wrong protocol version) and closed for protocol errors. */
  authFailures: number;
  protocolErrors: number;
  /** Connections dropped because their unsent output passed `outputQueueMax` (they stopped reading). */
  slowPeersDropped: number;
  /** The most unsent output bytes any one connection has had queued (the server's memory for a peer that reads slowly or not at all). */
  outputQueuedPeak: number;
  /** Calls answered. */
  calls: number;
  /** Client transactions committed, and the store commits (fdatasyncs) that carried them. */
  commits: number;
  groupCommits: number;
  /** Votes refused with ConflictError. */
  conflicts: number;
  /** `invalidate` pushes sent. */
  invalidations: number;
  /** Blob downloads served in full, and their bytes. */
  blobDownloads: number;
  blobBytesSent: number;
  /** Blob uploads received in full, and their bytes. */
  blobUploads: number;
  blobBytesReceived: number;
  /** The store's last transaction id. */
  lastTxid: bigint;
}

/** A running server, as `serve()` returns it. */
export interface ServerHandle {
  /** The URL clients connect to (with the real port when 0 was asked for). */
  readonly url: string;
  /** Stops listening, closes every connection (uncommitted transactions are dropped) and waits for a commit in progress. The store stays open: its owner closes it. */
  close(): Promise<void>;
  stats(): ServerStats;
}

/**
 * Serves `store` (open, writable or read-only) to clients at
 * `options.listen` until `close()`. The store must stay open while the
 * server runs and must not be used directly meanwhile (the server owns its
 * transactions).
 *
 * @example
 * const store = open("./data", { create: true });
 * const server = await serve(store, { listen: "unix:/tmp/segstore.sock" });
 * // clients: await connect(server.url, { cacheDir: "/tmp/blob-cache" })
 * await server.close();
 * store.close();
 */
export async function serve(store: Store, options: ServeOptions): Promise<ServerHandle> {
  if (options === null || typeof options !== "object") throw new TypeError("serve: options must be an object with listen");
  for (const name of Object.keys(options)) {
    if (!SERVE_OPTION_NAMES.includes(name)) throw new TypeError(`serve: unknown option ${JSON.stringify(name)} (options: ${SERVE_OPTION_NAMES.join(", ")})`);
  }
  if (typeof options.listen !== "string") throw new TypeError("serve: options.listen must be a URL: tcp://HOST:PORT or unix:/path");
  const tcp = options.listen.startsWith("tcp:");
  if (tcp && options.token === undefined) {
    throw new TypeError(`serve: ${options.listen} is a TCP address, which needs a token (options.token): clients prove they know it`);
  }
  const token = options.token === undefined ? undefined : tokenBytes(options.token, "serve");
  const limits = {
    helloTimeout: positiveOption(options.helloTimeout, HELLO_TIMEOUT_MS, "helloTimeout", "milliseconds"),
    outputQueueMax: positiveOption(options.outputQueueMax, OUTPUT_QUEUE_MAX_BYTES, "outputQueueMax", "bytes"),
  };
  if (store.closed) throw new StateError("ECLOSED", `serve: store ${store.path} is closed`, { store: store.path });
  if (store.inTransaction) throw new StateError("EBUSY", `serve: store ${store.path} has an open transaction: commit or roll back first`, { store: store.path });
  if (servedStores.has(store)) throw new StateError("EBUSY", `serve: store ${store.path} is already being served: one server per open store`, { store: store.path });
  const fs = store.fs;
  if (fs.listen === undefined) throw new TypeError(`serve: the ${fs.name} filesystem adapter has no sockets (listen)`);
  if (!store.readOnly) serveSharedDirPrepare(store);
  const server = new Server(store, token, limits);
  servedStores.add(store);
  let listener: Listener;
  try {
    listener = await fs.listen(options.listen, (conn) => server.accept(conn));
  } catch (e) {
    servedStores.delete(store);
    throw e;
  }
  server.started(listener);
  return {
    url: listener.url,
    close: async () => {
      await server.close();
      servedStores.delete(store);
    },
    stats: () => server.stats(),
  };
}

/** `value` when given (a whole number > 0), else `fallback`. */
function positiveOption(value: number | undefined, fallback: number, name: string, unit: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) throw new RangeError(`serve: ${name} must be a whole number of ${unit} > 0, got ${value}`);
  return value;
}

/** Server limits that `serve`'s options may change. */
interface ServerLimits {
  helloTimeout: number;
  outputQueueMax: number;
}

/** Stores a server runs on: two servers on one store would commit behind each other's back. */
const servedStores = new WeakSet<Store>();

/**
 * Makes the blob directory exist (clients sharing it write their uploads
 * there) and removes upload files a client wrote for an earlier server but
 * never handed over: no client can be mid-upload to a server not yet running.
 */
function serveSharedDirPrepare(store: Store): void {
  const fs = store.fs;
  const dir = store.paths.blobs;
  try {
    fs.mkdir(dir);
  } catch (e) {
    if (!isFsError(e, "EEXIST")) throw e;
  }
  for (const name of fs.readdir(dir)) {
    if (!UPLOAD_NAME_PATTERN.test(name)) continue;
    try {
      fs.unlink(joinPath(dir, name));
    } catch {
      // gone already
    }
  }
}

// ---------------------------------------------------------------------------
// The server

interface FinishWaiter {
  session: Session;
  resolve(txid: bigint): void;
  reject(e: unknown): void;
}

/**
 * Microtask hops a Deno server waits before a group commit: Deno resolves
 * every socket read that completed in one event-loop turn together, and
 * each session's path from its read to finish() takes a few hops, so after
 * this many every commit that arrived in the same turn has queued. (W7 on
 * Deno: 2,600 commits/s with setTimeout(0), which waits a millisecond or
 * more; 4,200-5,400 with 1 to 32 hops, 8 the best of three runs.)
 */
export const DENO_FLUSH_MICROTASK_HOPS = 8;

/**
 * How to run `fn` once the I/O that is ready has been handled, so a group
 * commit sees every commit that arrived meanwhile. Measured per runtime
 * (W7): Node runs setImmediate right after its I/O poll, while
 * setTimeout(0) waits a whole millisecond. In Deno, setImmediate and
 * MessageChannel messages run before completed socket reads reach
 * JavaScript, but reads completed in the same turn are delivered together,
 * so a few microtask hops collect them (DENO_FLUSH_MICROTASK_HOPS).
 * `wait` is for waiting for more: it must yield to the event loop, which
 * in Deno only a timer does. The adapter says which runtime it is.
 */
function afterIoFor(fs: FileSystem): { soon: (fn: () => void) => void; wait: (fn: () => void) => void } {
  const setImmediateFn = (globalThis as { setImmediate?: (fn: () => void) => void }).setImmediate;
  if (fs.name === "node" && typeof setImmediateFn === "function") {
    const immediate = (fn: () => void) => setImmediateFn(fn);
    return { soon: immediate, wait: immediate };
  }
  return {
    soon: (fn) => {
      const hop = (left: number): void => (left === 0 ? fn() : queueMicrotask(() => hop(left - 1)));
      hop(DENO_FLUSH_MICROTASK_HOPS);
    },
    wait: (fn) => setTimeout(fn, 0),
  };
}

class Server {
  readonly store: Store;
  readonly token: Uint8Array | undefined;
  readonly limits: ServerLimits;
  readonly serials: SerialTable;
  readonly sessions = new Set<Session>();
  readonly counters = {
    connectionsTotal: 0, authFailures: 0, protocolErrors: 0, slowPeersDropped: 0, calls: 0, commits: 0, groupCommits: 0,
    conflicts: 0, invalidations: 0, blobDownloads: 0, blobBytesSent: 0, blobUploads: 0, blobBytesReceived: 0,
  };
  /** The largest output queue of the connections already closed (see ServerStats.outputQueuedPeak). */
  #outputPeakClosed = 0;
  #listener: Listener | undefined;
  #url = "";
  #finishQueue: FinishWaiter[] = [];
  #flushScheduled = false;
  /** Group commit pacing (see #flush): when waiting began, the timer, the last commit's duration, each session's last commit. */
  #waitStarted: number | undefined;
  #waitTimer: ReturnType<typeof setTimeout> | undefined;
  #lastCommitMs = 0;
  /** Moving average of the time from a commit's reply to the same client's next finish. */
  #turnaroundMs = 0;
  readonly #lastCommitAt = new Map<Session, number>();
  #closed = false;
  readonly #afterIo: (fn: () => void) => void;
  readonly #afterIoWait: (fn: () => void) => void;

  constructor(store: Store, token: Uint8Array | undefined, limits: ServerLimits) {
    this.store = store;
    this.token = token;
    this.limits = limits;
    const afterIo = afterIoFor(store.fs);
    this.#afterIo = afterIo.soon;
    this.#afterIoWait = afterIo.wait;
    this.serials = new SerialTable(store.nextTxid - 1n);
  }

  started(listener: Listener): void {
    this.#listener = listener;
    this.#url = listener.url;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The store's blob directory, where uploads are staged (same filesystem, so a commit moves them by rename). */
  get blobDir(): string {
    return this.store.paths.blobs;
  }

  accept(conn: Connection): void {
    if (this.#closed) {
      conn.close();
      return;
    }
    this.counters.connectionsTotal++;
    const session = new Session(this, conn);
    this.sessions.add(session);
    session.start();
  }

  stats(): ServerStats {
    let outputQueuedPeak = this.#outputPeakClosed;
    for (const s of this.sessions) outputQueuedPeak = Math.max(outputQueuedPeak, s.channel.queuedPeak);
    return {
      url: this.#url,
      connections: this.sessions.size,
      ...this.counters,
      outputQueuedPeak,
      lastTxid: this.store.closed ? this.serials.floor : this.store.nextTxid - 1n,
    };
  }

  /** Queues `session`'s voted transaction for the next group commit; resolves with its txid. */
  finish(session: Session): Promise<bigint> {
    const last = this.#lastCommitAt.get(session);
    if (last !== undefined) {
      // How long clients take from a commit's reply to their next commit (moving average).
      const gap = performance.now() - last;
      if (gap < GROUP_COMMIT_ACTIVE_MS) this.#turnaroundMs += (gap - this.#turnaroundMs) * TURNAROUND_EWMA_WEIGHT;
    }
    return new Promise((resolve, reject) => {
      this.#finishQueue.push({ session, resolve, reject });
      if (this.#waitTimer !== undefined && this.#finishQueue.length >= this.#activeCommitters()) {
        // Everyone we were waiting for is here: commit now.
        clearTimeout(this.#waitTimer);
        this.#waitTimer = undefined;
        this.#flushScheduled = false;
      }
      if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        this.#afterIo(() => this.#flush());
      }
    });
  }

  /** Sessions that committed within the last GROUP_COMMIT_ACTIVE_MS: the ones likely to commit again soon. */
  #activeCommitters(): number {
    const since = performance.now() - GROUP_COMMIT_ACTIVE_MS;
    let n = 0;
    for (const t of this.#lastCommitAt.values()) if (t >= since) n++;
    return n;
  }

  /**
   * Commits the queued sessions, after waiting a little for more when
   * fewer have queued than committed recently (the commit_delay /
   * commit_siblings of PostgreSQL): clients answered by the last group
   * need a moment to send their next commit, and one fdatasync for all of
   * them beats one each. It waits only when that moment (measured) is
   * short next to a commit (GROUP_COMMIT_WAIT_WORTH), and at most the last
   * commit's duration (capped at GROUP_COMMIT_WAIT_MAX_MS), so it can at
   * most double a commit's latency while it lets a group grow to every
   * active client.
   */
  #flush(): void {
    this.#flushScheduled = false;
    const queued = this.#finishQueue.length;
    if (queued === 0) return;
    const now = performance.now();
    this.#waitStarted ??= now;
    // Worth waiting only when a client's next commit comes back well within a commit's time.
    const worth = this.#turnaroundMs <= this.#lastCommitMs * GROUP_COMMIT_WAIT_WORTH;
    const budget = worth ? Math.min(GROUP_COMMIT_WAIT_MAX_MS, this.#lastCommitMs) : 0;
    const left = budget - (now - this.#waitStarted);
    if (!this.#closed && left > 0 && queued < this.#activeCommitters()) {
      this.#flushScheduled = true;
      if (left >= TIMER_RESOLUTION_MS) {
        this.#waitTimer = setTimeout(() => {
          this.#waitTimer = undefined;
          this.#flush();
        }, left);
      } else {
        // Less than a timer tick: look again after the next round of I/O (sub-millisecond commits on a fast disk).
        this.#afterIoWait(() => this.#flush());
      }
      return;
    }
    this.#waitStarted = undefined;
    const batch = this.#finishQueue.splice(0);
    const started = performance.now();
    this.#groupCommit(batch);
    const done = performance.now();
    this.#lastCommitMs = done - started;
    for (const item of batch) this.#lastCommitAt.set(item.session, done);
  }

  /**
   * Applies the staged writes of every session in `batch` into one store
   * transaction and commits it: one fdatasync for all. Synchronous from
   * start to end (blobs were staged on disk before the vote and are only
   * attached here), so no message of any client is handled while the store
   * holds uncommitted writes (invariant 1). On failure the transaction is
   * rolled back; when the batch held several sessions and the failure was
   * not the disk's, each is retried alone, so one client's bad write cannot
   * fail the others.
   */
  #groupCommit(batch: FinishWaiter[]): void {
    const store = this.store;
    const txidBefore = store.nextTxid - 1n;
    let txid: bigint;
    try {
      for (const item of batch) {
        for (const w of item.session.staged.values()) {
          if (w.kind === "put") store.put(w.id, w.value!);
          else if (w.kind === "delete") store.delete(w.id);
          else {
            // From here the store's transaction owns the staged file (its rollback removes it).
            w.attached = true;
            putBlobAttach(store, w.staged!);
          }
        }
      }
      txid = store.commit();
    } catch (e) {
      try {
        if (!store.closed && store.inTransaction) store.rollback();
      } catch {
        // the commit's own error is the one to report
      }
      const attached = batch.some((item) => [...item.session.staged.values()].some((w) => w.attached));
      if (batch.length > 1 && !attached && !(e instanceof StorageError) && !(e instanceof StateError)) {
        for (const item of batch) this.#groupCommit([item]);
        return;
      }
      for (const item of batch) {
        item.session.finished();
        item.reject(e);
      }
      return;
    }
    const changed = txid !== txidBefore;
    const written: { session: Session; ids: Uint8Array[] }[] = [];
    for (const item of batch) {
      if (changed) this.serials.committed(item.session.staged.keys(), txid);
      written.push({ session: item.session, ids: [...item.session.staged.values()].map((w) => w.id) });
      item.session.finished();
      item.resolve(txid);
    }
    this.counters.commits += batch.length;
    this.counters.groupCommits++;
    if (changed) this.#invalidate(txid, written);
  }

  /**
   * Sends each ready session the ids the batch changed that it did not
   * write itself. A session with more than `outputQueueMax` bytes unsent
   * has stopped reading: it is dropped instead (OUTPUT_QUEUE_MAX_BYTES).
   */
  #invalidate(txid: bigint, written: { session: Session; ids: Uint8Array[] }[]): void {
    for (const s of [...this.sessions]) {
      if (!s.ready) continue;
      if (s.channel.queuedBytes > this.limits.outputQueueMax) {
        this.counters.slowPeersDropped++;
        s.close(new StateError("ECLOSED", `connection ${s.channel.remote} dropped: over ${this.limits.outputQueueMax} bytes of output unread`));
        continue;
      }
      let ids: Uint8Array[] = [];
      for (const w of written) if (w.session !== s) ids = ids.length === 0 ? w.ids : ids.concat(w.ids);
      for (let i = 0; i < ids.length; i += LIST_CHUNK_IDS) {
        s.push("invalidate", [txid, i === 0 && ids.length <= LIST_CHUNK_IDS ? ids : ids.slice(i, i + LIST_CHUNK_IDS)]);
        this.counters.invalidations++;
      }
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#listener?.close();
    if (this.#waitTimer !== undefined) {
      clearTimeout(this.#waitTimer);
      this.#waitTimer = undefined;
      this.#flush();
    }
    for (const s of [...this.sessions]) s.close();
    for (const item of this.#finishQueue.splice(0)) item.reject(new StateError("ECLOSED", `server ${this.#url} closed before the commit`));
  }

  removed(session: Session): void {
    this.#outputPeakClosed = Math.max(this.#outputPeakClosed, session.channel.queuedPeak);
    this.sessions.delete(session);
    this.#lastCommitAt.delete(session);
  }
}

/**
 * Ids as an array of 32-byte bins, or packed: one bin of 32·n bytes (what
 * the client's batched gets send: one allocation per batch, not per id).
 * Packed ids are views into the frame, used only while the call runs.
 */
function argIds(v: unknown, what: string): Uint8Array[] {
  if (v instanceof Uint8Array) {
    if (v.length % KEY_SIZE !== 0) throw new TypeError(`${what}: packed ids must be a multiple of ${KEY_SIZE} bytes, got ${v.length}`);
    const ids = new Array<Uint8Array>(v.length / KEY_SIZE);
    for (let i = 0; i < ids.length; i++) ids[i] = v.subarray(i * KEY_SIZE, (i + 1) * KEY_SIZE);
    return ids;
  }
  if (!Array.isArray(v)) throw new TypeError(`${what} must be an array of ids or packed ids (bin), got ${describe(v)}`);
  return v.map((x, i) => argId(x, `${what}[${i}]`));
}

// ---------------------------------------------------------------------------
// One connection

/** One write staged by a session's open transaction. */
interface StagedWrite {
  kind: "put" | "delete" | "blob";
  id: Uint8Array;
  /** put: the value. */
  value?: Uint8Array;
  /** blob: the staged file (owned by the session until attached). */
  staged?: StagedBlob;
  /** Set once a group commit attached the blob to the store's transaction. */
  attached?: boolean;
  /** The serial the client read the key at (checked by vote). */
  serial: bigint;
}

/** A blob upload in progress (between uploadStart and uploadEnd): its chunks flow to putBlobStage. */
interface Upload {
  id: Uint8Array;
  serial: bigint;
  chunks: ChunkQueue;
  /** putBlobStage writing the temp file; rejects (and removes it) if the upload fails. */
  staging: Promise<StagedBlob>;
  length: number;
  /** Set when the upload is abandoned (abort, disconnect); putBlobStage's check throws it. */
  abandoned: Error | undefined;
}

type Handler = (s: Session, args: unknown[], msgid: number) => unknown;

/** Methods that need no open transaction state and only read the store. */
const METHODS: Record<string, Handler> = {
  get: (s, a) => s.get(a),
  has: (s, a) => s.has(a),
  getMany: (s, a) => s.getMany(a),
  list: (s, a, msgid) => s.list(a, msgid),
  blobStat: (s, a) => s.blobStat(a),
  blobDownload: (s, a, msgid) => s.blobDownload(a, msgid),
  write: (s, a) => s.write(a),
  uploadStart: (s, a, msgid) => s.uploadStart(a, msgid),
  uploadEnd: (s, a) => s.uploadEnd(a),
  uploadAbort: (s, a) => s.uploadAbort(a),
  uploadName: (s, a) => s.uploadNamed(a),
  vote: (s) => s.vote(),
  finish: (s) => s.finish(),
  commit: (s, a) => s.commit(a),
  abort: (s) => s.abort(),
  ping: (s) => s.server.store.nextTxid - 1n,
  stats: (s) => s.server.store.stats(),
  serverStats: (s) => s.server.stats(),
  compact: (s) => s.server.store.compact(),
  checkpoint: (s) => {
    s.server.store.checkpoint();
    return null;
  },
  check: (s, a) => {
    const store = s.server.store as unknown as { check?: (o: Record<string, unknown>) => unknown };
    if (typeof store.check !== "function") throw new SegstoreError("ENOTSUP", `store ${s.server.store.path}: this build has no check()`);
    const o = argMap(a[0], "check options");
    return store.check({ repair: o.repair === true });
  },
};

class Session {
  readonly server: Server;
  readonly channel: Channel;
  #state: "hello" | "ready" | "closed" = "hello";
  #nonce = randomNonce();
  #helloTimer: ReturnType<typeof setTimeout> | undefined;
  /** The open transaction: key → staged write, in the order written (later writes of a key replace earlier ones). */
  staged = new Map<string, StagedWrite>();
  #stagedBytes = 0;
  #voted = false;
  /** The error of a failed `write`: the vote fails with it, so a partial transaction never commits. */
  #poisoned: Error | undefined;
  /** In the server's finish queue or being committed: the staged writes belong to the group commit now. */
  #finishing = false;
  #uploads = new Map<number, Upload>();
  #inFlight = 0;
  #inFlightWaiters: (() => void)[] = [];
  #readEnded = false;

  constructor(server: Server, conn: Connection) {
    this.server = server;
    this.channel = new Channel(conn, {
      onMessage: (m) => this.#onMessage(m),
      onReadError: (e) => {
        this.server.counters.protocolErrors++;
        this.push("error", [errorToWire(e)]);
      },
      onReadEnd: () => {
        this.#readEnded = true;
        if (this.#inFlight === 0) void this.channel.end();
      },
      onClose: () => this.#teardown(),
    });
  }

  get ready(): boolean {
    return this.#state === "ready";
  }

  start(): void {
    this.#helloTimer = setTimeout(() => {
      if (this.#state === "hello") {
        this.push("error", [errorToWire(authError(`no hello within ${this.server.limits.helloTimeout} ms: closing`))]);
        void this.channel.end();
      }
    }, this.server.limits.helloTimeout);
    this.push("hello", [{
      protocol: PROTOCOL_VERSION,
      server: "segstore",
      auth: this.server.token === undefined ? "none" : "hmac-sha256",
      nonce: this.#nonce,
    }]);
    this.channel.start();
  }

  push(name: string, args: unknown[]): void {
    this.channel.send([0, name, args]);
  }

  close(error?: Error): void {
    this.channel.close(error);
  }

  // -------------------------------------------------------------------------
  // Dispatch

  #onMessage(value: unknown): void | Promise<void> {
    let call: { msgid: number; method: string; args: unknown[] };
    try {
      call = parseCall(value);
    } catch (e) {
      // A message we cannot trust the shape of: answer it if it has an id, then close.
      this.server.counters.protocolErrors++;
      const msgid = msgidOf(value);
      if (msgid > 0) this.channel.send([msgid, errorToWire(e), null]);
      else this.push("error", [errorToWire(e)]);
      void this.channel.end();
      return;
    }
    if (call.msgid === 0) {
      const pause = this.#notification(call.method, call.args);
      return pause ?? this.#backpressure();
    }
    if (this.#state !== "ready") {
      if (call.method === "hello") return this.#hello(call.msgid, call.args);
      this.server.counters.authFailures++;
      this.channel.send([call.msgid, errorToWire(authError(`${call.method} before hello: authenticate first`)), null]);
      void this.channel.end();
      return;
    }
    const handler = Object.hasOwn(METHODS, call.method) ? METHODS[call.method] : undefined;
    if (handler === undefined) {
      this.channel.send([call.msgid, errorToWire(protocolError(`unknown method ${describe(call.method)}`)), null]);
      return;
    }
    let result: unknown;
    try {
      result = handler(this, call.args, call.msgid);
    } catch (e) {
      this.#reply(call.msgid, e, null);
      return this.#backpressure();
    }
    if (result instanceof Promise) {
      this.#inFlight++;
      result.then((r) => this.#reply(call.msgid, null, r), (e) => this.#reply(call.msgid, e, null)).finally(() => {
        this.#inFlight--;
        if (this.#inFlight < IN_FLIGHT_MAX) for (const w of this.#inFlightWaiters.splice(0)) w();
        if (this.#readEnded && this.#inFlight === 0) void this.channel.end();
      });
    } else {
      this.#reply(call.msgid, null, result);
    }
    return this.#backpressure();
  }

  #reply(msgid: number, error: unknown, result: unknown): void {
    this.server.counters.calls++;
    if (error !== null) {
      this.channel.send([msgid, errorToWire(error), null]);
      return;
    }
    try {
      this.channel.send([msgid, null, result === undefined ? null : result]);
    } catch (e) {
      this.channel.send([msgid, errorToWire(e), null]);
    }
  }

  /** Pauses reading this connection while it has too many calls in flight or too much unsent output. */
  #backpressure(): void | Promise<void> {
    if (this.#inFlight >= IN_FLIGHT_MAX) return new Promise((resolve) => this.#inFlightWaiters.push(resolve));
    if (this.channel.queuedBytes > OUTPUT_HIGH_WATER_BYTES) return this.channel.whenDrained();
  }

  #notification(method: string, args: unknown[]): void | Promise<void> {
    if (this.#state !== "ready") {
      this.server.counters.authFailures++;
      this.push("error", [errorToWire(authError(`${method} before hello: authenticate first`))]);
      void this.channel.end();
      return;
    }
    if (method !== "uploadChunk") {
      this.server.counters.protocolErrors++;
      this.push("error", [errorToWire(protocolError(`unknown notification ${describe(method)} (only uploadChunk is sent without an msgid)`))]);
      void this.channel.end();
      return;
    }
    return this.#uploadChunk(args);
  }

  // -------------------------------------------------------------------------
  // Hello and authentication

  async #hello(msgid: number, args: unknown[]): Promise<void> {
    let reply: Record<string, unknown>;
    try {
      const o = argMap(args[0], "hello");
      if (o.protocol !== PROTOCOL_VERSION) {
        throw protocolError(`the client speaks protocol ${describe(o.protocol)}, this server ${PROTOCOL_VERSION}: use matching segstore versions`);
      }
      const clientNonce = o.nonce;
      if (!(clientNonce instanceof Uint8Array) || clientNonce.length !== AUTH_NONCE_SIZE) {
        throw protocolError(`hello needs a nonce of ${AUTH_NONCE_SIZE} bytes, got ${describe(clientNonce)}`);
      }
      const token = this.server.token;
      let proof: Uint8Array | null = null;
      if (token !== undefined) {
        const expected = await authProof(token, "client", this.#nonce, clientNonce);
        if (!proofsEqual(o.proof, expected)) {
          await new Promise((resolve) => setTimeout(resolve, AUTH_FAILURE_DELAY_MS));
          throw authError(`authentication failed for ${this.channel.remote}: ${o.proof === null || o.proof === undefined ? "no token given" : "wrong token"}`);
        }
        proof = await authProof(token, "server", clientNonce, this.#nonce);
      }
      const store = this.server.store;
      reply = {
        protocol: PROTOCOL_VERSION,
        proof,
        storeId: store.config.id,
        storePath: store.fs.resolve(store.path),
        blobDir: store.fs.resolve(this.server.blobDir),
        lastTxid: store.nextTxid - 1n,
        readOnly: store.readOnly,
        frameSizeMax: FRAME_SIZE_MAX,
        inFlightMax: IN_FLIGHT_MAX,
        blobChunkSize: BLOB_CHUNK_SIZE,
      };
    } catch (e) {
      this.server.counters.authFailures++;
      this.channel.send([msgid, errorToWire(e), null]);
      void this.channel.end();
      return;
    }
    if (this.#state === "closed") return;
    clearTimeout(this.#helloTimer);
    this.#state = "ready";
    this.channel.send([msgid, null, reply]);
  }

  // -------------------------------------------------------------------------
  // Reads: each answers with the key's serial, which the client sends back
  // with a write of that key (vote).

  /** `[value | nil, serial, isBlob]`: nil for an absent key, or a blob (isBlob true; read it with blobStat/blobDownload). */
  get(args: unknown[]): [Uint8Array | null, bigint, boolean] {
    const id = argId(args[0], "get id");
    const store = this.server.store;
    const value = store.get(id);
    const blob = value === undefined && store.has(id);
    return [value ?? null, this.server.serials.serial(keyString(id)), blob];
  }

  has(args: unknown[]): [boolean, bigint] {
    const id = argId(args[0], "has id");
    return [this.server.store.has(id), this.server.serials.serial(keyString(id))];
  }

  /**
   * `[values, serials]` in the order asked; a value is bin, nil (absent),
   * `false` (a blob) or `true`: present but past GET_MANY_REPLY_BYTES in
   * this reply (the client asks for it alone). Sizes come from the index,
   * so no value past the budget is ever read.
   */
  getMany(args: unknown[]): [(Uint8Array | null | boolean)[], bigint[]] {
    const ids = argIds(args[0], "getMany ids");
    if (ids.length > GET_MANY_IDS_MAX) throw new RangeError(`getMany of ${ids.length} ids is over the limit of ${GET_MANY_IDS_MAX} per call`);
    const store = this.server.store;
    const index = store.internals().index;
    const values: (Uint8Array | null | boolean)[] = new Array(ids.length).fill(null);
    const fetch: number[] = [];
    let budget = GET_MANY_REPLY_BYTES;
    for (let i = 0; i < ids.length; i++) {
      const entry = index.lookup(ids[i]!);
      if (entry < 0) continue;
      const size = index.sizeAt(entry);
      if (size & INDEX_BLOB_FLAG) {
        values[i] = false;
        continue;
      }
      const bytes = (size & INDEX_SIZE_MASK) - PUT_HEADER_SIZE;
      if (bytes > budget) {
        values[i] = true;
        continue;
      }
      budget -= bytes;
      fetch.push(i);
    }
    const got = store.getMany(fetch.map((i) => ids[i]!));
    for (let k = 0; k < fetch.length; k++) values[fetch[k]!] = got[k] ?? null;
    const serials = ids.map((id) => this.server.serials.serial(keyString(id)));
    return [values, serials];
  }

  /**
   * Every live id, pushed in `listChunk`s of LIST_CHUNK_IDS; the reply (the
   * count) ends the list. The ids are taken at once; the chunks go out as
   * the connection drains (past OUTPUT_HIGH_WATER_BYTES the rest waits), so
   * the list of a big store is not queued whole for a slow reader.
   */
  list(_args: unknown[], msgid: number): number | Promise<number> {
    const ids = this.server.store.list();
    let i = 0;
    const pushChunks = (): number | Promise<number> => {
      for (; i < ids.length && !this.channel.closed; i += LIST_CHUNK_IDS) {
        if (this.channel.queuedBytes > OUTPUT_HIGH_WATER_BYTES) return this.channel.whenDrained().then(pushChunks);
        this.push("listChunk", [msgid, ids.slice(i, i + LIST_CHUNK_IDS)]);
      }
      return ids.length;
    };
    return pushChunks();
  }

  /** The blob under `id`, or nil when `id` is absent or holds a plain value. */
  blobStat(args: unknown[]): Record<string, unknown> | null {
    const id = argId(args[0], "blobStat id");
    const store = this.server.store;
    const record = store.blobRecord(id);
    const serial = this.server.serials.serial(keyString(id));
    if (record === undefined) return null;
    const hex = idHex(id);
    return {
      serial,
      blobSerial: record.serial,
      length: record.length,
      hash: record.hash,
      // The blob's file relative to the blob directory: what a client sharing that directory opens.
      name: `${hex.slice(0, 2)}/${hex}.${record.serial}`,
    };
  }

  /**
   * Streams a blob: a `blobStart` push (length, hash, serial), `blobChunk`
   * pushes of up to BLOB_CHUNK_SIZE bytes read from the file one at a time
   * as the socket drains, then the reply (the stop).
   */
  async blobDownload(args: unknown[], msgid: number): Promise<Record<string, unknown>> {
    const id = argId(args[0], "blobDownload id");
    const wanted = argSerial(args[1], "blobDownload serial");
    const store = this.server.store;
    const hex = idHex(id);
    const record = store.blobRecord(id);
    if (record === undefined) throw new NotFoundError(`blob ${hex} not found in store ${store.path}`, { store: store.path });
    if (record.serial !== wanted) {
      throw new ConflictError(`blob ${hex} changed: its serial is now ${record.serial}, the download asked for ${wanted}; ask again`, [hex]);
    }
    const path = store.paths.blob(hex, record.serial);
    let file: File;
    try {
      file = store.fs.open(path, "r");
    } catch (e) {
      if (isFsError(e, "ENOENT")) throw new ConflictError(`blob ${hex} changed while it was being fetched; ask again`, [hex]);
      throw e;
    }
    const length = Number(record.length);
    try {
      this.push("blobStart", [msgid, record.length, record.hash, record.serial]);
      const dataAt = chunkHeaderSize("blobChunk");
      // Two buffers: the next chunk is read while the last is still going out, so the socket never waits
      // for the disk; a buffer is reused only once its frame was handed to the kernel.
      const bufs = [0, 1].map(() => new Uint8Array(dataAt + Math.min(BLOB_CHUNK_SIZE, Math.max(length, 1))));
      const inFlight: (Promise<void> | undefined)[] = [undefined, undefined];
      let pos = 0;
      for (let k = 0; pos < length; k ^= 1) {
        if (inFlight[k] !== undefined) await inFlight[k];
        const buf = bufs[k]!;
        const want = Math.min(BLOB_CHUNK_SIZE, length - pos);
        const n = file.read(buf.subarray(dataAt, dataAt + want), pos);
        if (n === 0) throw new IntegrityError(`blob file ${path} is shorter than its record says: ${pos} of ${length} bytes`, { store: store.path, file: path, offset: pos });
        writeChunkHeader(buf, "blobChunk", msgid, n);
        inFlight[k] = this.channel.sendFrame(buf.subarray(0, dataAt + n));
        // Handled when awaited; a failure before then must not go unhandled.
        inFlight[k]!.catch(() => {});
        pos += n;
        this.server.counters.blobBytesSent += n;
      }
      for (const p of inFlight) if (p !== undefined) await p;
    } finally {
      file.close();
    }
    this.server.counters.blobDownloads++;
    return { length: record.length };
  }

  // -------------------------------------------------------------------------
  // The staged transaction

  #checkWritable(what: string): void {
    const store = this.server.store;
    if (store.readOnly) throw new StateError("EREADONLY", `${what}: store ${store.path} is served read-only`, { store: store.path });
    if (this.#voted || this.#finishing) {
      throw new StateError("EBUSY", `${what}: this connection's transaction is voted; finish or abort it before writing more`);
    }
  }

  #stage(key: string, w: StagedWrite, bytes: number): void {
    const old = this.staged.get(key);
    if (old !== undefined) {
      this.#stagedBytes -= old.value?.length ?? 0;
      if (old.kind === "blob") this.#discardStaged(old);
      this.staged.delete(key); // re-inserted last: the order of writes is kept
    } else if (this.staged.size >= TRANSACTION_WRITES_MAX) {
      throw new RangeError(`transaction of over ${TRANSACTION_WRITES_MAX} writes: commit in smaller transactions`);
    }
    this.#stagedBytes += bytes;
    this.staged.set(key, w);
  }

  /** `write [[id, value | nil, serial], ...]`: stages puts (bin) and deletes (nil). A failed write fails the vote. */
  write(args: unknown[]): null {
    try {
      return this.#write(args);
    } catch (e) {
      if (!this.#voted && !this.#finishing) this.#poisoned = e as Error;
      throw e;
    }
  }

  #write(args: unknown[]): null {
    this.#checkWritable("write");
    if (!Array.isArray(args[0])) throw new TypeError(`write takes an array of [id, value | nil, serial], got ${describe(args[0])}`);
    const entries = args[0] as unknown[];
    // Check every entry before staging any, so a bad entry stages nothing.
    const checked: { key: string; w: StagedWrite; bytes: number }[] = [];
    let bytes = 0;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i];
      if (!Array.isArray(e) || e.length !== 3) throw new TypeError(`write entry ${i} must be [id, value | nil, serial], got ${describe(e)}`);
      const id = argId(e[0], `write entry ${i} id`);
      const serial = argSerial(e[2], `write entry ${i} serial`);
      if (e[1] === null) {
        checked.push({ key: keyString(id), w: { kind: "delete", id, serial }, bytes: 0 });
      } else {
        const value = argBytes(e[1], `write entry ${i} value`, MAX_OBJECT_SIZE);
        bytes += value.length;
        checked.push({ key: keyString(id), w: { kind: "put", id, value, serial }, bytes: value.length });
      }
    }
    if (this.#stagedBytes + bytes > TRANSACTION_BYTES_MAX) {
      throw new RangeError(`transaction of over ${TRANSACTION_BYTES_MAX} bytes of values: commit in smaller transactions, or store large values as blobs`);
    }
    for (const c of checked) this.#stage(c.key, c.w, c.bytes);
    return null;
  }

  /** Checks every staged key's serial; reserves the keys, or drops the transaction with ConflictError. */
  vote(): null {
    if (this.#voted || this.#finishing) throw new StateError("EBUSY", "vote: this connection's transaction is already voted");
    if (this.#poisoned !== undefined) {
      const why = this.#poisoned;
      this.#dropTransaction();
      throw new StateError("EBUSY", `vote: a write of this transaction failed (${why.message}); nothing was applied`);
    }
    for (const up of this.#uploads.values()) {
      if (up.abandoned === undefined) throw new StateError("EBUSY", `vote: the blob upload of ${idHex(up.id)} has not ended (uploadEnd)`);
    }
    const serials = this.server.serials;
    const conflicts = serials.conflicts([...this.staged].map(([key, w]) => [key, w.serial]));
    if (conflicts.length > 0) {
      this.server.counters.conflicts++;
      const hexes = conflicts.map((k) => idHex(this.staged.get(k)!.id));
      this.#dropTransaction();
      const shown = hexes.slice(0, 4).join(", ") + (hexes.length > 4 ? `, … (${hexes.length} in all)` : "");
      throw new ConflictError(`commit refused: ${hexes.length} key(s) changed since this client read them (or are being committed by another client): ${shown}; nothing was applied`, hexes);
    }
    serials.reserve(this.staged.keys());
    this.#voted = true;
    return null;
  }

  /**
   * `commit [writes]`: `write`, `vote` and `finish` in one call (what a
   * client sends for a transaction whose writes fit one frame): one frame
   * each way per commit. Errors as those three.
   */
  commit(args: unknown[]): bigint | Promise<bigint> {
    this.write(args);
    this.vote();
    return this.finish();
  }

  /** Commits the voted transaction in the next group commit; resolves with its txid. */
  finish(): bigint | Promise<bigint> {
    if (this.#finishing) throw new StateError("EBUSY", "finish: this connection's transaction is already being committed");
    if (!this.#voted) throw protocolError("finish without a successful vote: nothing to commit");
    if (this.staged.size === 0) {
      this.#voted = false;
      return this.server.store.nextTxid - 1n;
    }
    this.#finishing = true;
    return this.server.finish(this);
  }

  /** Called by the group commit once this session's transaction committed or failed. */
  finished(): void {
    assert(this.#finishing, "finished() follows finish()");
    this.server.serials.release(this.staged.keys());
    for (const w of this.staged.values()) this.#discardStaged(w);
    this.staged = new Map();
    this.#stagedBytes = 0;
    this.#voted = false;
    this.#finishing = false;
  }

  /** Drops the open transaction: staged writes, staged blob files, uploads in progress, reserved keys. */
  abort(): null {
    if (this.#finishing) throw new StateError("EBUSY", "abort: the transaction is already being committed");
    this.#dropTransaction();
    return null;
  }

  #dropTransaction(): void {
    if (this.#voted) this.server.serials.release(this.staged.keys());
    for (const w of this.staged.values()) this.#discardStaged(w);
    this.staged = new Map();
    this.#stagedBytes = 0;
    this.#voted = false;
    this.#poisoned = undefined;
    for (const up of this.#uploads.values()) this.#uploadAbandon(up, new StateError("EBUSY", "the transaction was aborted"));
  }

  #discardStaged(w: StagedWrite): void {
    if (w.staged !== undefined && !w.attached) putBlobDiscard(this.server.store, w.staged);
  }

  // -------------------------------------------------------------------------
  // Blob uploads: streamed by putBlobStage (blobs.ts) into a temp file of
  // the store, hashed and fdatasync'ed outside any transaction; attached to
  // the store's transaction by the group commit.

  /** `uploadStart [id, serial]`: starts streaming into a staged blob; the upload id is this call's msgid. */
  uploadStart(args: unknown[], msgid: number): null {
    const id = argId(args[0], "uploadStart id");
    const serial = argSerial(args[1], "uploadStart serial");
    if (this.#uploads.has(msgid)) throw protocolError(`uploadStart: upload ${msgid} is already in progress on this connection`);
    const chunks = new ChunkQueue();
    const up: Upload = { id, serial, chunks, staging: Promise.resolve(undefined as unknown as StagedBlob), length: 0, abandoned: undefined };
    // Registered even when it fails below, so its chunks are dropped quietly and uploadEnd reports the error.
    this.#uploads.set(msgid, up);
    try {
      this.#checkWritable("uploadStart");
    } catch (e) {
      up.abandoned = e as Error;
      up.staging = Promise.reject(e);
      up.staging.catch(() => {});
      throw e;
    }
    up.staging = putBlobStage(this.server.store, id, chunks, () => {
      if (up.abandoned !== undefined) throw up.abandoned;
    });
    // Failures are reported by uploadEnd (or nobody, after a disconnect); the chunk pushes see them as a failed queue.
    up.staging.catch((e) => chunks.fail(e));
    return null;
  }

  /** `uploadChunk [uploadId, bytes]` (a notification): hands the bytes to the blob writer; reading pauses until it took them. */
  #uploadChunk(args: unknown[]): void | Promise<void> {
    const uploadId = typeof args[0] === "number" ? args[0] : -1;
    const up = this.#uploads.get(uploadId);
    // Unknown or failed: the chunk is dropped; uploadEnd reports why.
    if (up === undefined || up.abandoned !== undefined) return;
    const data = args[1];
    if (!(data instanceof Uint8Array)) {
      this.#uploadAbandon(up, new TypeError(`uploadChunk data must be bytes, got ${describe(data)}`));
      return;
    }
    up.length += data.length;
    this.server.counters.blobBytesReceived += data.length;
    // Reading goes on once the blob writer took the chunk, so the next frame arrives while this one is
    // hashed and written; its frame buffer is reused once the writer is done with it.
    return up.chunks.push(data, this.channel.consumedLater());
  }

  #uploadAbandon(up: Upload, error: Error): void {
    if (up.abandoned !== undefined) return;
    up.abandoned = error;
    up.chunks.fail(error);
  }

  /** `uploadEnd [uploadId, length]`: waits for the blob to be staged (durable, hashed), checks the length, adds it to the transaction. */
  async uploadEnd(args: unknown[]): Promise<Record<string, unknown>> {
    const uploadId = argMsgid(args[0], "uploadEnd upload id");
    const length = argCount(args[1], "uploadEnd length");
    const up = this.#uploads.get(uploadId);
    if (up === undefined) throw new NotFoundError(`uploadEnd: no upload ${uploadId} on this connection`);
    if (up.length !== length) {
      this.#uploadAbandon(up, new IntegrityError(`blob upload of ${idHex(up.id)}: received ${up.length} bytes, the client says it sent ${length}`));
    }
    up.chunks.end();
    let staged: StagedBlob;
    try {
      staged = await up.staging;
    } finally {
      this.#uploads.delete(uploadId);
    }
    if (up.abandoned !== undefined || this.#state === "closed") {
      putBlobDiscard(this.server.store, staged);
      throw up.abandoned ?? new StateError("ECLOSED", "connection closed");
    }
    assert(staged.length === length, "the staged blob holds the bytes received");
    this.#stageBlob(up.id, staged, up.serial);
    return { length: staged.length, hash: staged.hash };
  }

  /** `uploadAbort [uploadId]`: the client gives up an upload (its source failed); what was received is removed. */
  async uploadAbort(args: unknown[]): Promise<null> {
    const uploadId = argMsgid(args[0], "uploadAbort upload id");
    const up = this.#uploads.get(uploadId);
    if (up === undefined) return null;
    this.#uploads.delete(uploadId);
    this.#uploadAbandon(up, new StateError("EBUSY", `blob upload of ${idHex(up.id)} aborted by the client`));
    await up.staging.catch(() => {});
    return null;
  }

  #stageBlob(id: Uint8Array, staged: StagedBlob, serial: bigint): void {
    try {
      this.#checkWritable("blob upload");
      this.#stage(keyString(id), { kind: "blob", id, staged, serial }, 0);
    } catch (e) {
      putBlobDiscard(this.server.store, staged);
      throw e;
    }
    this.server.counters.blobUploads++;
  }

  /**
   * `uploadName [id, name, serial]` (shared blob directory): stages a file
   * the client wrote into the server's blob directory, moving it into the
   * store's staging (hashed in place, then renamed). Only a bare name of
   * UPLOAD_NAME_PATTERN's form is accepted, so no path outside that
   * directory can be named.
   */
  async uploadNamed(args: unknown[]): Promise<Record<string, unknown>> {
    const id = argId(args[0], "uploadName id");
    const name = args[1];
    const serial = argSerial(args[2], "uploadName serial");
    if (typeof name !== "string" || !UPLOAD_NAME_PATTERN.test(name)) {
      throw new TypeError(`uploadName: ${describe(name)} is not an upload file name (upload-<32 hex digits>.tmp, no directory part)`);
    }
    this.#checkWritable("uploadName");
    const path = joinPath(this.server.blobDir, name);
    const st = this.server.store.fs.stat(path);
    if (st === undefined || !st.isFile) throw new NotFoundError(`uploadName: no file ${name} in the blob directory ${this.server.blobDir}`);
    const staged = await putBlobStage(this.server.store, id, { path, move: true });
    if (this.#state === "closed") {
      putBlobDiscard(this.server.store, staged);
      throw new StateError("ECLOSED", "connection closed");
    }
    this.#stageBlob(id, staged, serial);
    return { length: staged.length, hash: staged.hash };
  }

  // -------------------------------------------------------------------------
  // Teardown

  #teardown(): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    clearTimeout(this.#helloTimer);
    for (const w of this.#inFlightWaiters.splice(0)) w();
    // A transaction already in the group commit finishes there (its files belong to it now).
    if (!this.#finishing) this.#dropTransaction();
    else for (const up of this.#uploads.values()) this.#uploadAbandon(up, new StateError("ECLOSED", "connection closed"));
    this.server.removed(this);
  }
}

