/**
 * The client: `connect(url, options)` gives a `RemoteStore`, the Store API
 * over a socket, every method async. docs/protocol.md is the wire contract.
 *
 * Map: options · `connect` (connect, hello, authenticate) · `RemoteStore`:
 * calls and pushes · reads (with the value cache) · the transaction
 * (buffered writes, commit = write* + vote + finish, pipelined) · blobs
 * (upload streamed as the socket drains; download into the shared blob
 * cache, or straight from the server's blob directory when shared) ·
 * admin (stats, compact, checkpoint, check) · close.
 *
 * ## Transactions
 * Puts and deletes are buffered here and sent at commit; blob uploads are
 * streamed to the server at `putBlob` (staged there on disk, outside any
 * transaction) and join the transaction at commit. Each write carries the
 * serial this client last saw for its key (docs/protocol.md, "Serials"):
 * the serial read in this transaction, else the one in the value cache,
 * else the newest transaction id this client has heard of. The server's
 * vote refuses the commit with ConflictError if a key changed since;
 * nothing is applied then, and (as with Store.commit) a failed commit
 * rolls the transaction back here.
 *
 * ## The value cache
 * Reads are kept (value and serial) in a byte-bounded cache, least
 * recently used out first (approximated by CLOCK). After every
 * commit the server sends each other client an `invalidate` push with the
 * ids it changed, which drops them here; so a cached read is as fresh as
 * the pushes that have arrived, as in ZEO.
 */
import type { Connection, File, FileSystem } from "../fs.ts";
import { isFsError } from "../fs.ts";
import { WritebackPacer } from "../blobs.ts";
import { ParallelBlake3 } from "../blake3parallel.ts";
import {
  BLOB_HASH_SIZE, IntegrityError, KEY_SIZE, MAX_OBJECT_SIZE, NotFoundError, StateError,
} from "../format.ts";
import { dirnameOf, joinPath } from "../paths.ts";
import { checkKey } from "../segments.ts";
import { idHex, type CompactResult, type StoreStats } from "../store.ts";
import { authProof, proofsEqual, randomNonce, tokenBytes } from "./auth.ts";
import { BlobCache, CACHE_SIZE_DEFAULT, cacheBlobName } from "./cache.ts";
import { Channel } from "./channel.ts";
import {
  authError, AUTH_NONCE_SIZE, BLOB_CHUNK_SIZE, chunkHeaderSize, describe, errorFromWire, HELLO_TIMEOUT_MS, IN_FLIGHT_MAX, keyString, MSGID_MAX, parseServerMessage, PROTOCOL_VERSION, protocolError,
  TRANSACTION_BYTES_MAX, uploadName, WRITE_BATCH_BYTES, writeChunkHeader,
} from "./protocol.ts";
import type { ServerStats } from "./server.ts";

// ---------------------------------------------------------------------------
// Options and limits

/** Default bytes of values the client keeps in its in-memory value cache. */
export const VALUE_CACHE_BYTES_DEFAULT = 16 * 1024 * 1024;
/** Most entries of the value cache, whatever their size (each costs ~150 bytes of bookkeeping). */
export const VALUE_CACHE_ENTRIES_MAX = 200_000;
/** Ids per getMany call; more are split into several calls (the server's GET_MANY_IDS_MAX). */
export const GET_MANY_BATCH = 16384;
/**
 * Gets asked for in one turn of the event loop are sent together, as
 * getMany calls of up to this many ids: small enough that replies start
 * flowing at once and several batches are in flight, large enough that a
 * frame carries hundreds of reads.
 */
export const GET_BATCH_MAX = 256;
/**
 * Keys whose read serial one transaction remembers. Past it, a write of a
 * key whose read was not remembered carries the transaction's start (the
 * newest txid known at its first read), so the vote can only refuse more,
 * never less; and a client that only reads holds bounded memory.
 */
export const READS_TRACKED_MAX = 65536;
/** Bytes of a blob read per chunk of the stream openBlob returns to a default reader (a BYOB reader chooses its own). */
export const BLOB_READ_CHUNK = 256 * 1024;

/**
 * Options of `connect()`. Every field is optional except as noted.
 *
 * @example
 * const remote = await connect("tcp://127.0.0.1:7070", { token: "secret token", cacheDir: "/var/cache/segstore" });
 */
export interface ConnectOptions {
  /** The server's token: required by a TCP server, never sent (proved with HMAC-SHA256). */
  token?: string | Uint8Array;
  /**
   * The blob cache directory, shared by every client process on this
   * machine (created if missing). When it is the server's own blob
   * directory (STORE/blobs, same machine), blobs move by rename instead of
   * over the socket. Default: none (openBlob and blobPath then throw).
   */
  cacheDir?: string;
  /** Target size of the blob cache in bytes (least recently used blobs are evicted past it). Default 4 GiB. */
  cacheSize?: number;
  /** Bytes of values kept in memory by this client. Default 16 MiB; 0 disables the value cache. */
  valueCacheBytes?: number;
  /** The filesystem adapter (sockets and the cache); default: the runtime's (mod.ts passes it). */
  fs?: FileSystem;
}

const CONNECT_OPTION_NAMES = ["token", "cacheDir", "cacheSize", "valueCacheBytes", "fs"];

/** What a cached read holds: a value, nothing (absent), or a blob / a key known to exist. */
const enum Held { Absent, Value, Blob, Exists }

interface CachedRead {
  held: Held;
  value: Uint8Array | undefined;
  serial: bigint;
  /** The transaction (RemoteStore's generation) in which this client last read it; 0: not read. */
  readIn: number;
  /** CLOCK's second-chance bit: set by a hit, cleared when eviction passes it over. */
  used: boolean;
}

/** A write buffered in the open transaction. */
interface BufferedWrite {
  id: Uint8Array;
  kind: "put" | "delete" | "blob";
  value?: Uint8Array;
}

/** A get waiting to be sent in the next batch. */
interface QueuedGet {
  key: string;
  resolve(value: Uint8Array | undefined): void;
  reject(error: unknown): void;
}

/** A call waiting for its reply. */
interface PendingCall {
  resolve(result: unknown): void;
  reject(error: Error): void;
  /**
   * Pushes that belong to this call (listChunk, blobStart, blobChunk). A
   * promise returned holds the next message back until it settles.
   */
  onPush?(name: string, args: unknown[]): void | Promise<void>;
}

/** The server's facts from the hello reply. */
interface HelloReply {
  storeId: string;
  storePath: string;
  blobDir: string;
  lastTxid: bigint;
  readOnly: boolean;
}

/** What a blob looks like to the client (blobStat's reply). */
interface BlobStat {
  serial: bigint;
  blobSerial: bigint;
  length: number;
  hash: Uint8Array;
  name: string;
}

/**
 * Connects to a segstore server at `url` ("tcp://HOST:PORT" or
 * "unix:/path"), authenticates, and returns a RemoteStore: the Store API,
 * every method async. Throws SegstoreError EAUTH when the token is missing
 * or wrong (or the server cannot prove it knows it), EPROTOCOL for a server
 * of another protocol version, FsError for a refused connection.
 *
 * @example
 * const remote = await connect("unix:/tmp/segstore.sock", { cacheDir: "/tmp/cache" });
 * await remote.put(id, bytes);
 * const txid = await remote.commit();
 * await remote.close();
 */
export async function connect(url: string, options: ConnectOptions & { fs: FileSystem }): Promise<RemoteStore> {
  if (typeof url !== "string") throw new TypeError(`connect: url must be a string like tcp://127.0.0.1:7070 or unix:/path, got ${typeof url}`);
  if (options === null || typeof options !== "object") throw new TypeError("connect: options must be an object");
  for (const name of Object.keys(options)) {
    if (!CONNECT_OPTION_NAMES.includes(name)) {
      const hint = name.toLowerCase() === "cachedir" ? " (did you mean cacheDir?)" : "";
      throw new TypeError(`connect: unknown option ${JSON.stringify(name)}${hint} (options: ${CONNECT_OPTION_NAMES.join(", ")})`);
    }
  }
  const token = options.token === undefined ? undefined : tokenBytes(options.token, "connect");
  if (options.cacheDir !== undefined && (typeof options.cacheDir !== "string" || options.cacheDir === "")) {
    throw new TypeError("connect: cacheDir must be a directory path");
  }
  const cacheSize = options.cacheSize ?? CACHE_SIZE_DEFAULT;
  if (!Number.isSafeInteger(cacheSize) || cacheSize < 0) throw new RangeError(`connect: cacheSize must be a whole number of bytes >= 0, got ${cacheSize}`);
  const valueCacheBytes = options.valueCacheBytes ?? VALUE_CACHE_BYTES_DEFAULT;
  if (!Number.isSafeInteger(valueCacheBytes) || valueCacheBytes < 0) {
    throw new RangeError(`connect: valueCacheBytes must be a whole number of bytes >= 0, got ${valueCacheBytes}`);
  }
  const fs = options.fs;
  if (fs.connect === undefined) throw new TypeError(`connect: the ${fs.name} filesystem adapter has no sockets (connect)`);
  const conn = await fs.connect(url);
  const remote = new RemoteStore(url, fs, conn, valueCacheBytes);
  try {
    await remote.hello(token);
    if (options.cacheDir !== undefined) remote.cacheOpen(options.cacheDir, cacheSize);
  } catch (e) {
    await remote.close().catch(() => {});
    throw e;
  }
  return remote;
}

// ---------------------------------------------------------------------------
// The remote store

/**
 * A store served by a segstore server: the methods of Store, async. Reads
 * see this client's own buffered writes; writes become visible to others
 * at commit. See the top of client.ts for transactions and caching.
 */
export class RemoteStore {
  readonly url: string;
  readonly fs: FileSystem;
  #channel: Channel;
  #pending = new Map<number, PendingCall>();
  #nextMsgid = 1;
  /** Calls waiting for a free in-flight slot, in order from #outboxHead (a queue without O(n) shifts). */
  #outbox: { msgid: number; method: string; args: unknown[] }[] = [];
  #outboxHead = 0;
  #closed = false;
  #closeReason: Error | undefined;
  /** The error the server pushed before closing the connection. */
  #serverError: Error | undefined;
  #helloWaiter: ((args: unknown[]) => void) | undefined;
  #hello: HelloReply | undefined;
  /** The newest transaction id this client has heard of (hello, its own commits, invalidations). */
  #view = 0n;
  // The value cache: CLOCK over Map order (see #cacheGet), bounded in bytes and entries.
  #cache = new Map<string, CachedRead>();
  #cacheBytes = 0;
  #cacheBytesMax: number;
  // The open transaction.
  #writes = new Map<string, BufferedWrite>();
  #writeBytes = 0;
  #reads = new Map<string, bigint>();
  /** Counts transactions: a cache entry's `readIn` equal to it was read in the open one. */
  #generation = 1;
  /** The newest txid known when this transaction's first read was remembered (see READS_TRACKED_MAX). */
  #readsView: bigint | undefined;
  #readsOverflow = false;
  /** Files of `{ path, move: true }` blob sources, removed once the commit succeeds. */
  #moveSources: string[] = [];
  /** Set once the server has staged something of ours (a blob), so rollback tells it. */
  #serverStaged = false;
  #blobCache: BlobCache | undefined;
  #sharedBlobDir: string | undefined;
  #invalidateListeners = new Set<(ids: Uint8Array[], txid: bigint) => void>();
  /** Gets waiting for this turn's batch (see #getsFlush). */
  #gets: QueuedGet[] = [];
  /** Their ids, packed GET_BATCH_MAX to a buffer. */
  #getsPacked: Uint8Array[] = [];

  /** @internal Use `connect()`. */
  constructor(url: string, fs: FileSystem, conn: Connection, valueCacheBytes: number) {
    this.url = url;
    this.fs = fs;
    this.#cacheBytesMax = valueCacheBytes;
    this.#channel = new Channel(conn, {
      onMessage: (m) => this.#onMessage(m),
      onReadError: (e) => this.#lost(e),
      onClose: (e) => this.#lost(e),
    });
    this.#channel.start();
  }

  // -------------------------------------------------------------------------
  // Hello

  /** @internal The hello exchange: protocol version, then challenge-response when the server asks for it. */
  async hello(token: Uint8Array | undefined): Promise<void> {
    const args = await this.#withTimeout(new Promise<unknown[]>((resolve) => (this.#helloWaiter = resolve)), "the server's hello");
    const h = (args[0] ?? {}) as Record<string, unknown>;
    if (h.protocol !== PROTOCOL_VERSION) {
      throw protocolError(`server ${this.url} speaks protocol ${describe(h.protocol)}, this client ${PROTOCOL_VERSION}: use matching segstore versions`);
    }
    const serverNonce = h.nonce;
    if (!(serverNonce instanceof Uint8Array) || serverNonce.length !== AUTH_NONCE_SIZE) throw protocolError("the server's hello has no valid nonce");
    const needsToken = h.auth === "hmac-sha256";
    if (needsToken && token === undefined) throw authError(`server ${this.url} requires a token: pass connect(url, { token })`);
    const nonce = randomNonce();
    const proof = token === undefined ? null : await authProof(token, "client", serverNonce.slice(), nonce);
    const reply = await this.#withTimeout(this.#call("hello", [{ protocol: PROTOCOL_VERSION, nonce, proof }]), "the hello reply") as Record<string, unknown>;
    if (token !== undefined && needsToken) {
      const expected = await authProof(token, "server", nonce, serverNonce.slice());
      if (!proofsEqual(reply.proof, expected)) throw authError(`server ${this.url} could not prove it knows the token: not the server you meant`);
    }
    this.#hello = {
      storeId: String(reply.storeId),
      storePath: String(reply.storePath),
      blobDir: String(reply.blobDir),
      lastTxid: toBigint(reply.lastTxid),
      readOnly: reply.readOnly === true,
    };
    this.#view = this.#hello.lastTxid;
  }

  #withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(protocolError(`no ${what} from ${this.url} within ${HELLO_TIMEOUT_MS} ms`)), HELLO_TIMEOUT_MS);
    });
    const lost = new Promise<never>((_, reject) => {
      this.#onLost.push(() => reject(this.#closedError()));
    });
    return Promise.race([p, timeout, lost]).finally(() => clearTimeout(timer));
  }

  #onLost: (() => void)[] = [];
  #replyWaiters: (() => void)[] = [];

  /** @internal Opens the blob cache (or detects the server's blob directory). */
  cacheOpen(dir: string, size: number): void {
    const hello = this.#hello!;
    const resolved = this.fs.resolve(dir);
    if (resolved === hello.blobDir && this.#sameStore(hello)) {
      this.#sharedBlobDir = resolved;
      return;
    }
    this.#blobCache = BlobCache.open(this.fs, dir, size);
  }

  /** True when the server's store directory is visible here as the same store (its config names the same id). */
  #sameStore(hello: HelloReply): boolean {
    try {
      const f = this.fs.open(joinPath(dirnameOf(hello.blobDir), "config"), "r");
      try {
        const buf = new Uint8Array(Math.min(f.size(), 4096));
        const n = f.read(buf, 0);
        return new TextDecoder().decode(buf.subarray(0, n)).includes(hello.storeId);
      } finally {
        f.close();
      }
    } catch {
      return false;
    }
  }

  // -------------------------------------------------------------------------
  // Calls and pushes

  get closed(): boolean {
    return this.#closed;
  }

  /** The newest transaction id this client has heard of. */
  get lastTxid(): bigint {
    return this.#view;
  }

  /** True when blobs move through the server's own blob directory (cacheDir is STORE/blobs). */
  get sharedBlobDir(): boolean {
    return this.#sharedBlobDir !== undefined;
  }

  /** True while the transaction has writes not yet committed. */
  get inTransaction(): boolean {
    return this.#writes.size > 0;
  }

  /**
   * Calls `listener(ids, txid)` whenever the server reports that another
   * client's commit changed `ids`. Returns a function that removes it.
   *
   * @example
   * const off = remote.onInvalidate((ids, txid) => console.log(ids.length, "changed in", txid));
   */
  onInvalidate(listener: (ids: Uint8Array[], txid: bigint) => void): () => void {
    this.#invalidateListeners.add(listener);
    return () => this.#invalidateListeners.delete(listener);
  }

  #call(method: string, args: unknown[], onPush?: PendingCall["onPush"]): Promise<unknown> {
    return this.#callWithId(method, args, onPush).reply;
  }

  #callWithId(method: string, args: unknown[], onPush?: PendingCall["onPush"]): { msgid: number; reply: Promise<unknown> } {
    if (this.#closed) return { msgid: 0, reply: Promise.reject(this.#closedError()) };
    let msgid = this.#nextMsgid;
    while (this.#pending.has(msgid)) msgid = msgid >= MSGID_MAX ? 1 : msgid + 1;
    this.#nextMsgid = msgid >= MSGID_MAX ? 1 : msgid + 1;
    const reply = new Promise<unknown>((resolve, reject) => {
      this.#pending.set(msgid, { resolve, reject, onPush });
    });
    if (this.#pending.size > IN_FLIGHT_MAX || this.#outboxWaiting > 0) this.#outbox.push({ msgid, method, args });
    else this.#channel.send([msgid, method, args]);
    return { msgid, reply };
  }

  /** Calls queued in the outbox. */
  get #outboxWaiting(): number {
    return this.#outbox.length - this.#outboxHead;
  }

  /** Sends queued calls while in-flight slots are free. */
  #drainOutbox(): void {
    while (this.#outboxWaiting > 0 && this.#pending.size - this.#outboxWaiting < IN_FLIGHT_MAX) {
      const c = this.#outbox[this.#outboxHead]!;
      this.#outbox[this.#outboxHead++] = undefined as never;
      this.#channel.send([c.msgid, c.method, c.args]);
    }
    if (this.#outboxHead === this.#outbox.length) {
      this.#outbox = [];
      this.#outboxHead = 0;
    } else if (this.#outboxHead > 4096 && this.#outboxHead * 2 > this.#outbox.length) {
      this.#outbox = this.#outbox.slice(this.#outboxHead);
      this.#outboxHead = 0;
    }
  }

  #onMessage(value: unknown): void | Promise<void> {
    const m = parseServerMessage(value);
    if (m.msgid !== 0) {
      const p = this.#pending.get(m.msgid);
      if (p === undefined) throw protocolError(`reply to msgid ${m.msgid}, which is not in flight`);
      this.#pending.delete(m.msgid);
      if (m.error !== null && m.error !== undefined) p.reject(errorFromWire(m.error));
      else p.resolve(m.result);
      if (this.#outboxWaiting > 0) this.#drainOutbox();
      if (this.#replyWaiters.length > 0) for (const w of this.#replyWaiters.splice(0)) w();
      return;
    }
    const args = m.args!;
    switch (m.name) {
      case "hello":
        this.#helloWaiter?.(args);
        this.#helloWaiter = undefined;
        return;
      case "invalidate":
        this.#invalidate(args);
        return;
      case "error":
        // The server is closing this connection; say why to whoever is waiting.
        this.#serverError = errorFromWire(args[0]);
        return;
      default: {
        const p = typeof args[0] === "number" ? this.#pending.get(args[0]) : undefined;
        if (p?.onPush === undefined) throw protocolError(`push ${describe(m.name)} for no call in flight`);
        return p.onPush(m.name!, args);
      }
    }
  }

  #invalidate(args: unknown[]): void {
    const txid = toBigint(args[0]);
    const ids = Array.isArray(args[1]) ? args[1].filter((x): x is Uint8Array => x instanceof Uint8Array && x.length === KEY_SIZE) : [];
    if (txid > this.#view) this.#view = txid;
    for (const id of ids) this.#cacheDrop(keyString(id));
    if (this.#invalidateListeners.size > 0) {
      const copies = ids.map((id) => id.slice());
      for (const l of this.#invalidateListeners) l(copies, txid);
    }
  }

  #lost(error: Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#closeReason === undefined && error !== undefined) this.#closeReason = error;
    this.#channel.close();
    const e = this.#closedError();
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
    this.#outbox = [];
    this.#outboxHead = 0;
    for (const f of this.#onLost.splice(0)) f();
    for (const w of this.#replyWaiters.splice(0)) w();
    this.#blobCache = undefined;
  }

  #closedError(): Error {
    // The server's own reason for closing (a protocol error...) keeps its class.
    if (this.#serverError !== undefined) return this.#serverError;
    const reason = this.#closeReason;
    return new StateError("ECLOSED", `connection to ${this.url} is closed${reason ? `: ${reason.message}` : ""}`);
  }

  #checkOpen(): void {
    if (this.#closed) throw this.#closedError();
  }

  #checkWritable(what: string): void {
    this.#checkOpen();
    if (this.#hello?.readOnly) throw new StateError("EREADONLY", `${what}: the server at ${this.url} serves its store read-only`);
  }

  // -------------------------------------------------------------------------
  // The value cache

  // The cache is an LRU approximated by CLOCK (second chance): a hit only
  // sets `used`; eviction skips used entries once, moving them to the end.
  // Each entry also remembers the transaction (generation) in which this
  // client last read it, so the read set of a transaction costs nothing on
  // the hot path: only when an entry read in this transaction leaves the
  // cache (invalidated, evicted, replaced) is its serial copied into #reads.

  #cacheGet(key: string): CachedRead | undefined {
    const c = this.#cache.get(key);
    if (c !== undefined) c.used = true;
    return c;
  }

  /** Caches a read (or this client's own committed write) of `key`; false when it is too big to cache. */
  #cacheSet(key: string, c: CachedRead): boolean {
    this.#cacheDrop(key);
    if (this.#cacheBytesMax === 0) return false;
    const size = (c.value?.length ?? 0) + KEY_SIZE;
    if (size > this.#cacheBytesMax / 4) return false;
    this.#cache.set(key, c);
    this.#cacheBytes += size;
    while (this.#cacheBytes > this.#cacheBytesMax || this.#cache.size > VALUE_CACHE_ENTRIES_MAX) {
      const [oldestKey, oldest] = this.#cache.entries().next().value as [string, CachedRead];
      if (oldest.used && oldestKey !== key) {
        oldest.used = false;
        this.#cache.delete(oldestKey);
        this.#cache.set(oldestKey, oldest);
        continue;
      }
      this.#cacheDrop(oldestKey);
    }
    return true;
  }

  #cacheDrop(key: string): void {
    const c = this.#cache.get(key);
    if (c === undefined) return;
    this.#cache.delete(key);
    this.#cacheBytes -= (c.value?.length ?? 0) + KEY_SIZE;
    if (c.readIn === this.#generation) this.#rememberRead(key, c.serial);
  }

  /**
   * Notes that this transaction read `key` at `serial`. A cached entry
   * carries it (`readIn`); a read that is not cached goes to #reads.
   */
  #noteRead(key: string, serial: bigint, cached: CachedRead | undefined): void {
    if (this.#readsView === undefined) this.#readsView = this.#view;
    if (cached !== undefined) {
      if (cached.readIn !== this.#generation) {
        // Read in this transaction from an entry cached earlier: its serial is what this transaction saw.
        cached.readIn = this.#generation;
      }
      return;
    }
    this.#rememberRead(key, serial);
  }

  /** Records a read serial in #reads (the first read in the transaction wins), up to READS_TRACKED_MAX. */
  #rememberRead(key: string, serial: bigint): void {
    if (this.#readsOverflow || this.#reads.has(key)) return;
    if (this.#reads.size >= READS_TRACKED_MAX) {
      this.#readsOverflow = true;
      return;
    }
    this.#reads.set(key, serial);
  }

  /**
   * The serial a write of `key` carries: the one this transaction read
   * (from #reads, or the cached entry it read); else, if reads overflowed
   * READS_TRACKED_MAX, the transaction's start; else the cached one; else
   * the newest txid heard of (a blind write).
   */
  #serialFor(key: string): bigint {
    const read = this.#reads.get(key);
    if (read !== undefined) return read;
    const c = this.#cache.get(key);
    if (c !== undefined && c.readIn === this.#generation) return c.serial;
    if (this.#readsOverflow) return this.#readsView!;
    return c?.serial ?? this.#view;
  }

  // -------------------------------------------------------------------------
  // Reads

  /**
   * The value stored under `id`, or undefined (absent, or a blob). Sees this
   * client's uncommitted writes. Returns a fresh copy.
   *
   * @example
   * const bytes = await remote.get(id);
   */
  get(id: Uint8Array): Promise<Uint8Array | undefined> {
    // Not an async function: the hot path of pipelined reads allocates as little as it can.
    if (this.#closed) return Promise.reject(this.#closedError());
    try {
      checkKey(id);
    } catch (e) {
      return Promise.reject(e);
    }
    const key = keyString(id);
    if (this.#writes.size > 0) {
      const w = this.#writes.get(key);
      if (w !== undefined) return Promise.resolve(w.kind === "put" ? w.value!.slice() : undefined);
    }
    const c = this.#cacheGet(key);
    if (c !== undefined && c.held !== Held.Exists) {
      this.#noteRead(key, c.serial, c);
      return Promise.resolve(c.held === Held.Value ? c.value!.slice() : undefined);
    }
    return new Promise((resolve, reject) => {
      // Copied into the batch's packed ids now: the caller may reuse its array before the batch is sent.
      const n = this.#gets.length;
      if (n % GET_BATCH_MAX === 0) this.#getsPacked.push(new Uint8Array(GET_BATCH_MAX * KEY_SIZE));
      this.#getsPacked[this.#getsPacked.length - 1]!.set(id, (n % GET_BATCH_MAX) * KEY_SIZE);
      this.#gets.push({ key, resolve, reject });
      if (n === 0) queueMicrotask(() => this.#getsFlush());
    });
  }

  /**
   * Sends the gets asked for in this turn of the event loop: one alone as
   * `get`, several as `getMany` calls of up to GET_BATCH_MAX ids (as
   * DataLoader does), so pipelined reads cost one frame per batch.
   */
  #getsFlush(): void {
    const gets = this.#gets;
    const packed = this.#getsPacked;
    this.#gets = [];
    this.#getsPacked = [];
    for (let b = 0, start = 0; start < gets.length; b++, start += GET_BATCH_MAX) {
      const part = gets.length <= GET_BATCH_MAX ? gets : gets.slice(start, start + GET_BATCH_MAX);
      const ids = packed[b]!.subarray(0, part.length * KEY_SIZE);
      if (part.length === 1) {
        this.#getOne(part[0]!, ids);
        continue;
      }
      this.#call("getMany", [ids]).then((reply) => this.#getsDeliver(part, ids, reply), (e) => {
        for (const g of part) g.reject(e);
      });
    }
  }

  #getsDeliver(part: QueuedGet[], ids: Uint8Array, reply: unknown): void {
    const [values, serials] = reply as [(Uint8Array | null | boolean)[], unknown[]];
    for (let k = 0; k < part.length; k++) {
      const g = part[k]!;
      const v = values[k];
      if (v === true) {
        // Past the reply's byte budget: fetched alone.
        this.#getOne(g, ids.subarray(k * KEY_SIZE, (k + 1) * KEY_SIZE));
        continue;
      }
      try {
        g.resolve(this.#gotValue(g.key, v ?? null, toBigint(serials[k])));
      } catch (e) {
        g.reject(e);
      }
    }
  }

  #getOne(g: QueuedGet, id: Uint8Array): void {
    this.#call("get", [id]).then((reply) => {
      const [value, serial, blob] = reply as [Uint8Array | null, unknown, boolean];
      g.resolve(this.#gotValue(g.key, value === null && blob === true ? false : value, toBigint(serial)));
    }).catch(g.reject);
  }

  /** Records a read (serial, cache) and returns the caller's copy: `value` bin, null (absent) or false (a blob). */
  #gotValue(key: string, value: Uint8Array | null | false, serial: bigint): Uint8Array | undefined {
    if (value === null || value === false) {
      this.#cacheRead(key, value === null ? Held.Absent : Held.Blob, undefined, serial);
      return undefined;
    }
    // The reply's bytes are a view into a socket buffer: keep our own copy, hand out another.
    const own = value.slice();
    return this.#cacheRead(key, Held.Value, own, serial) ? own.slice() : own;
  }

  /** Caches what a read from the server saw and notes the read; false when not cached. */
  #cacheRead(key: string, held: Held, value: Uint8Array | undefined, serial: bigint): boolean {
    const entry: CachedRead = { held, value, serial, readIn: this.#generation, used: false };
    if (this.#readsView === undefined) this.#readsView = this.#view;
    if (this.#cacheSet(key, entry)) return true;
    this.#rememberRead(key, serial);
    return false;
  }

  /**
   * True when `id` holds a value or a blob (this transaction's writes included).
   *
   * @example
   * if (!(await remote.has(id))) await remote.put(id, bytes);
   */
  async has(id: Uint8Array): Promise<boolean> {
    this.#checkOpen();
    checkKey(id);
    const key = keyString(id);
    const w = this.#writes.get(key);
    if (w !== undefined) return w.kind !== "delete";
    const c = this.#cacheGet(key);
    if (c !== undefined) {
      this.#noteRead(key, c.serial, c);
      return c.held !== Held.Absent;
    }
    const [present, serial] = await this.#call("has", [id]) as [boolean, unknown];
    this.#cacheRead(key, present ? Held.Exists : Held.Absent, undefined, toBigint(serial));
    return present === true;
  }

  /**
   * Many values at once, in `ids` order (undefined where absent or a blob).
   *
   * @example
   * const [a, b] = await remote.getMany([idA, idB]);
   */
  async getMany(ids: Uint8Array[]): Promise<(Uint8Array | undefined)[]> {
    this.#checkOpen();
    if (!Array.isArray(ids)) throw new TypeError(`getMany: ids must be an array of ids, got ${typeof ids}`);
    const out: (Uint8Array | undefined)[] = new Array(ids.length).fill(undefined);
    const ask: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      checkKey(ids[i], `ids[${i}]`);
      const key = keyString(ids[i]!);
      const w = this.#writes.get(key);
      if (w !== undefined) {
        out[i] = w.kind === "put" ? w.value!.slice() : undefined;
        continue;
      }
      const c = this.#cacheGet(key);
      if (c !== undefined && c.held !== Held.Exists) {
        this.#noteRead(key, c.serial, c);
        out[i] = c.held === Held.Value ? c.value!.slice() : undefined;
        continue;
      }
      ask.push(i);
    }
    const alone: Promise<void>[] = [];
    const batches: Promise<void>[] = [];
    for (let start = 0; start < ask.length; start += GET_MANY_BATCH) {
      const part = ask.slice(start, start + GET_MANY_BATCH);
      batches.push((async () => {
        const [values, serials] = await this.#call("getMany", [part.map((i) => ids[i]!)]) as [(Uint8Array | null | boolean)[], unknown[]];
        for (let k = 0; k < part.length; k++) {
          const i = part[k]!;
          const v = values[k];
          if (v === true) {
            // Past the reply's byte budget: fetched alone.
            alone.push(this.get(ids[i]!).then((x) => void (out[i] = x)));
            continue;
          }
          out[i] = this.#gotValue(keyString(ids[i]!), v ?? null, toBigint(serials[k]));
        }
      })());
    }
    await Promise.all(batches);
    await Promise.all(alone);
    return out;
  }

  /**
   * Every live id (values and blobs), this transaction's writes applied,
   * in no particular order.
   *
   * @example
   * for (const id of await remote.list()) console.log(idHex(id));
   */
  async list(): Promise<Uint8Array[]> {
    this.#checkOpen();
    const ids: Uint8Array[] = [];
    const count = await this.#call("list", [], (name, args) => {
      if (name !== "listChunk" || !Array.isArray(args[1])) throw protocolError(`unexpected push ${name} during list`);
      for (const id of args[1] as unknown[]) if (id instanceof Uint8Array && id.length === KEY_SIZE) ids.push(id.slice());
    });
    if (count !== ids.length) throw protocolError(`list: the server said ${describe(count)} ids and sent ${ids.length}`);
    if (this.#writes.size === 0) return ids;
    const out: Uint8Array[] = [];
    const seen = new Set<string>();
    for (const id of ids) {
      const key = keyString(id);
      seen.add(key);
      if (this.#writes.get(key)?.kind !== "delete") out.push(id);
    }
    for (const [key, w] of this.#writes) if (!seen.has(key) && w.kind !== "delete") out.push(w.id.slice());
    return out;
  }

  // -------------------------------------------------------------------------
  // The transaction

  /**
   * Stores `value` under `id` in this client's transaction (sent at commit).
   * Values up to MAX_OBJECT_SIZE; larger ones are blobs.
   *
   * @example
   * await remote.put(id, new TextEncoder().encode("hello"));
   * await remote.commit();
   */
  async put(id: Uint8Array, value: Uint8Array): Promise<void> {
    this.#checkWritable("put");
    checkKey(id);
    if (!(value instanceof Uint8Array)) throw new TypeError(`put: value must be a Uint8Array, got ${typeof value}`);
    if (value.length > MAX_OBJECT_SIZE) {
      throw new RangeError(`put: value of ${value.length} bytes is over MAX_OBJECT_SIZE (${MAX_OBJECT_SIZE}); store it with putBlob`);
    }
    const key = keyString(id);
    const old = this.#writes.get(key);
    const bytes = this.#writeBytes - (old?.value?.length ?? 0) + value.length;
    if (bytes > TRANSACTION_BYTES_MAX) {
      throw new RangeError(`put: the transaction would hold ${bytes} bytes of values, over ${TRANSACTION_BYTES_MAX}: commit in smaller transactions, or use blobs`);
    }
    this.#writeBytes = bytes;
    // Buffered until commit, so the caller may reuse its array.
    this.#writes.delete(key);
    this.#writes.set(key, { id: id.slice(), kind: "put", value: value.slice() });
  }

  /**
   * Deletes `id` in this client's transaction; resolves to whether it was there.
   *
   * @example
   * await remote.delete(id) // true
   */
  async delete(id: Uint8Array): Promise<boolean> {
    this.#checkWritable("delete");
    checkKey(id);
    const existed = await this.has(id);
    const key = keyString(id);
    const old = this.#writes.get(key);
    this.#writeBytes -= old?.value?.length ?? 0;
    this.#writes.delete(key);
    this.#writes.set(key, { id: id.slice(), kind: "delete" });
    return existed;
  }

  /**
   * Commits this client's transaction on the server: its writes, each
   * checked against the serial this client read (vote), applied and made
   * durable together with other clients' commits of the same moment (one
   * fdatasync), then this resolves with the transaction id. Throws
   * ConflictError when a key changed since this client read it: nothing is
   * applied, and the transaction is rolled back here (read again, retry).
   * With nothing to commit it resolves with the newest txid known.
   *
   * @example
   * await remote.put(id, bytes);
   * const txid = await remote.commit();
   */
  async commit(): Promise<bigint> {
    this.#checkWritable("commit");
    if (this.#writes.size === 0) {
      this.#transactionReset();
      return this.#view;
    }
    const writes = this.#writes;
    const moveSources = this.#moveSources;
    const batches: unknown[][] = [];
    let batch: unknown[] = [];
    let batchBytes = 0;
    for (const [key, w] of writes) {
      if (w.kind === "blob") continue; // already staged on the server by putBlob
      const size = (w.value?.length ?? 0) + KEY_SIZE + 16;
      if (batch.length > 0 && batchBytes + size > WRITE_BATCH_BYTES) {
        batches.push(batch);
        batch = [];
        batchBytes = 0;
      }
      batch.push([w.id, w.kind === "put" ? w.value! : null, this.#serialFor(key)]);
      batchBytes += size;
    }
    batches.push(batch);
    // Pipelined: the writes, the vote and the finish leave together (one `commit` call when the
    // writes fit one frame); the first error is the one reported.
    const calls: Promise<unknown>[] = [];
    if (batches.length === 1) {
      calls.push(this.#call("commit", [batches[0]]));
    } else {
      for (const b of batches) calls.push(this.#call("write", [b]));
      calls.push(this.#call("vote", []));
      calls.push(this.#call("finish", []));
    }
    this.#transactionReset();
    const settled = await Promise.allSettled(calls);
    const failed = settled.find((r) => r.status === "rejected") as PromiseRejectedResult | undefined;
    if (failed !== undefined) {
      const e = failed.reason;
      if (e instanceof StateError && e.code === "ECLOSED") {
        // The commit may or may not have reached the disk before the connection went.
        throw new StateError("ECLOSED", `${e.message}; the outcome of this commit is unknown: reconnect and read to find out`);
      }
      throw e;
    }
    const txid = toBigint((settled[settled.length - 1] as PromiseFulfilledResult<unknown>).value);
    if (txid > this.#view) this.#view = txid;
    for (const [key, w] of writes) {
      const held = w.kind === "put" ? Held.Value : w.kind === "delete" ? Held.Absent : Held.Blob;
      this.#cacheSet(key, { held, value: w.kind === "put" ? w.value! : undefined, serial: txid, readIn: 0, used: false });
    }
    for (const path of moveSources) {
      try {
        this.fs.unlink(path);
      } catch {
        // already gone: it was the caller's
      }
    }
    return txid;
  }

  /**
   * Discards this client's transaction (and the blobs it staged on the server).
   *
   * @example
   * await remote.put(id, bytes); await remote.rollback(); await remote.get(id) // as before
   */
  async rollback(): Promise<void> {
    this.#checkOpen();
    const staged = this.#serverStaged;
    this.#transactionReset();
    if (staged) await this.#call("abort", []);
  }

  #transactionReset(): void {
    this.#generation++;
    this.#writes = new Map();
    this.#writeBytes = 0;
    this.#reads = new Map();
    this.#readsView = undefined;
    this.#readsOverflow = false;
    this.#moveSources = [];
    this.#serverStaged = false;
  }

  // -------------------------------------------------------------------------
  // Blobs

  /**
   * Stores a blob under `id` in this client's transaction: the bytes of a
   * ReadableStream or AsyncIterable of Uint8Array, or of a file (`{ path }`;
   * with `move: true` the file is removed once the commit succeeds, or
   * renamed straight into the store when the cache directory is the
   * server's blob directory). The bytes stream to the server now, read
   * only as fast as the socket drains, and are staged there on disk;
   * `commit()` makes them part of the store.
   *
   * @example
   * await remote.putBlob(id, fileStream);
   * await remote.commit();
   */
  async putBlob(id: Uint8Array, source: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | { path: string; move?: boolean } | Uint8Array): Promise<{ length: number; hash: Uint8Array }> {
    this.#checkWritable("putBlob");
    checkKey(id);
    const key = keyString(id);
    const serial = this.#serialFor(key);
    const result = this.#sharedBlobDir !== undefined
      ? await this.#putBlobShared(id, source, serial)
      : await this.#putBlobUpload(id, source, serial);
    this.#serverStaged = true;
    const old = this.#writes.get(key);
    this.#writeBytes -= old?.value?.length ?? 0;
    this.#writes.delete(key);
    this.#writes.set(key, { id: id.slice(), kind: "blob" });
    return result;
  }

  /** Streams `source` to the server in chunk frames, each sent only once the last was handed to the kernel. */
  async #putBlobUpload(id: Uint8Array, source: unknown, serial: bigint): Promise<{ length: number; hash: Uint8Array }> {
    // The chunks are notifications that must follow uploadStart: wait until nothing is queued ahead of it.
    while (this.#outboxWaiting > 0 || this.#pending.size >= IN_FLIGHT_MAX) await this.#someReply();
    const start = this.#callWithId("uploadStart", [id, serial]);
    let startFailed: unknown;
    start.reply.catch((e) => (startFailed = e));
    const headerSize = chunkHeaderSize("uploadChunk");
    // Two buffers: one fills from the source while the other's frame is going out. A buffer is
    // refilled only once its frame was handed to the kernel, so the source is read as the socket drains.
    const bufs = [0, 1].map(() => new Uint8Array(headerSize + BLOB_CHUNK_SIZE));
    const sending: (Promise<void> | undefined)[] = [undefined, undefined];
    let cur = 0;
    let buf = bufs[0]!;
    let fill = 0;
    let total = 0;
    const send = async () => {
      if (fill === 0) return;
      writeChunkHeader(buf, "uploadChunk", start.msgid, fill);
      const p = this.#channel.sendFrame(buf.subarray(0, headerSize + fill));
      p.catch(() => {}); // awaited below or at the end; never unhandled
      sending[cur] = p;
      total += fill;
      fill = 0;
      cur ^= 1;
      buf = bufs[cur]!;
      if (sending[cur] !== undefined) await sending[cur];
    };
    // A frame's worth of the source's own bytes goes out as they are, behind a header built apart: not
    // copied. It is awaited before the next chunk is asked for, as a copied frame's buffer is, since a source
    // may fill the same buffer again for its next chunk (a generator reading into one buffer does).
    const header = new Uint8Array(headerSize);
    const sendDirect = async (data: Uint8Array) => {
      writeChunkHeader(header, "uploadChunk", start.msgid, data.length); // free: the last direct frame was awaited
      total += data.length;
      await this.#channel.sendFrameParts(header, data);
    };
    const take = async (chunk: Uint8Array) => {
      let at = 0;
      while (at < chunk.length) {
        if (startFailed !== undefined) throw startFailed;
        if (fill === 0 && chunk.length - at >= BLOB_CHUNK_SIZE) {
          // A source chunk of a frame's size or more goes out as it is, a frame at a time (nothing gathered precedes it).
          await sendDirect(chunk.subarray(at, at + BLOB_CHUNK_SIZE));
          at += BLOB_CHUNK_SIZE;
          continue;
        }
        const n = Math.min(BLOB_CHUNK_SIZE - fill, chunk.length - at);
        buf.set(chunk.subarray(at, at + n), headerSize + fill);
        fill += n;
        at += n;
        if (fill === BLOB_CHUNK_SIZE) await send();
      }
    };
    let moveFrom: string | undefined;
    try {
      if (source instanceof Uint8Array) {
        await take(source);
      } else if (isPathSource(source)) {
        const file = this.#openSource(source.path);
        try {
          for (;;) {
            if (startFailed !== undefined) throw startFailed;
            const n = file.read(buf.subarray(headerSize + fill, headerSize + BLOB_CHUNK_SIZE), total + fill);
            if (n === 0) break;
            fill += n;
            if (fill === BLOB_CHUNK_SIZE) await send();
          }
        } finally {
          file.close();
        }
        if (source.move === true) moveFrom = source.path;
      } else {
        await forEachChunk(source, take);
      }
      await send();
      for (const p of sending) if (p !== undefined) await p;
    } catch (e) {
      // The source (or the server) failed mid-way: the server drops what it received.
      this.#call("uploadAbort", [start.msgid]).catch(() => {});
      throw e;
    }
    const ended = await this.#call("uploadEnd", [start.msgid, total]) as Record<string, unknown>;
    await start.reply;
    if (moveFrom !== undefined) this.#moveSources.push(moveFrom);
    return { length: total, hash: ended.hash as Uint8Array };
  }

  /** Resolves after the next reply arrives (or the connection closes). */
  #someReply(): Promise<void> {
    this.#checkOpen();
    return new Promise((resolve) => this.#replyWaiters.push(resolve));
  }

  #openSource(path: string): File {
    try {
      return this.fs.open(path, "r");
    } catch (e) {
      if (isFsError(e, "ENOENT")) throw new NotFoundError(`putBlob: source file ${path} does not exist`, { file: path });
      throw e;
    }
  }

  /** Shared blob directory: the bytes go into a file there (a move is a rename), and only its name is sent. */
  async #putBlobShared(id: Uint8Array, source: unknown, serial: bigint): Promise<{ length: number; hash: Uint8Array }> {
    const name = uploadName();
    const path = joinPath(this.#sharedBlobDir!, name);
    let moved = false;
    if (isPathSource(source) && source.move === true) {
      try {
        this.fs.rename(source.path, path);
        moved = true;
      } catch (e) {
        if (isFsError(e, "ENOENT")) throw new NotFoundError(`putBlob: source file ${source.path} does not exist`, { file: source.path });
        if (!isFsError(e, "EXDEV")) throw e;
      }
    }
    if (!moved) {
      const out = this.fs.open(path, "wx+");
      let pos = 0;
      try {
        const write = async (chunk: Uint8Array) => {
          out.write(chunk, pos);
          pos += chunk.length;
        };
        if (source instanceof Uint8Array) await write(source);
        else if (isPathSource(source)) {
          const file = this.#openSource(source.path);
          try {
            const buf = new Uint8Array(BLOB_CHUNK_SIZE);
            for (;;) {
              const n = file.read(buf, pos);
              if (n === 0) break;
              await write(buf.subarray(0, n));
            }
          } finally {
            file.close();
          }
          if (source.move === true) this.#moveSources.push(source.path);
        } else await forEachChunk(source, write);
      } catch (e) {
        out.close();
        try {
          this.fs.unlink(path);
        } catch {
          // nothing to clean
        }
        throw e;
      }
      out.close();
    }
    try {
      const r = await this.#call("uploadName", [id, name, serial]) as Record<string, unknown>;
      return { length: Number(r.length), hash: r.hash as Uint8Array };
    } catch (e) {
      if (moved) {
        // Give the caller its file back where it can.
        try {
          this.fs.rename(path, (source as { path: string }).path);
        } catch {
          // the server took it (or it is gone): nothing to give back
        }
      } else {
        try {
          this.fs.unlink(path);
        } catch {
          // the server took it already
        }
      }
      throw e;
    }
  }

  async #blobStat(id: Uint8Array): Promise<BlobStat | undefined> {
    const key = keyString(id);
    const w = this.#writes.get(key);
    if (w?.kind === "blob") {
      throw new StateError("EBUSY", `blob ${idHex(id)} was put in this client's open transaction: it can be read once committed`);
    }
    if (w !== undefined) return undefined;
    const r = await this.#call("blobStat", [id]) as Record<string, unknown> | null;
    if (r === null) return undefined;
    const stat: BlobStat = {
      serial: toBigint(r.serial),
      blobSerial: toBigint(r.blobSerial),
      length: Number(toBigint(r.length)),
      hash: r.hash as Uint8Array,
      name: String(r.name),
    };
    if (!(stat.hash instanceof Uint8Array) || stat.hash.length !== BLOB_HASH_SIZE || !/^[0-9a-f]{2}\/[0-9a-f]{64}\.\d+$/.test(stat.name)) {
      throw protocolError(`blobStat of ${idHex(id)}: malformed reply`);
    }
    this.#noteRead(key, stat.serial, undefined);
    return stat;
  }

  /**
   * A stream of the blob stored under `id`, or undefined when `id` holds no
   * blob. The blob is fetched into the shared cache directory first if no
   * process on this machine has it (one process downloads, the others wait
   * for it), verified (length and BLAKE3), then read from there. Read the
   * stream to its end or cancel it: until then the cached file is held
   * open and cannot be evicted.
   *
   * @example
   * const stream = await remote.openBlob(id);
   */
  async openBlob(id: Uint8Array): Promise<ReadableStream<Uint8Array> | undefined> {
    this.#checkOpen();
    checkKey(id);
    for (let attempt = 0; ; attempt++) {
      const stat = await this.#blobStat(id);
      if (stat === undefined) return undefined;
      try {
        if (this.#sharedBlobDir !== undefined) {
          const file = this.fs.open(joinPath(this.#sharedBlobDir, stat.name), "r");
          return fileStream(file, stat.length, () => file.close());
        }
        const entry = await this.#cacheEntry(id, stat);
        return fileStream(entry.file, stat.length, () => entry.release());
      } catch (e) {
        // Replaced between the stat and the fetch: ask again (a few times; a key rewritten faster than that is a hot spot).
        const changed = e instanceof Error && ((e as { code?: string }).code === "ECONFLICT" || isFsError(e, "ENOENT"));
        if (!changed || attempt >= 3) throw e;
      }
    }
  }

  /**
   * The path of a local file holding the blob stored under `id` (in the
   * cache, fetched first if needed; or in the server's blob directory when
   * shared), or undefined when `id` holds no blob. Read it, never write it;
   * copy it if you need it to last: eviction may remove it once no reader
   * holds it open.
   *
   * @example
   * const path = await remote.blobPath(id);
   */
  async blobPath(id: Uint8Array): Promise<string | undefined> {
    this.#checkOpen();
    checkKey(id);
    const stat = await this.#blobStat(id);
    if (stat === undefined) return undefined;
    if (this.#sharedBlobDir !== undefined) return joinPath(this.#sharedBlobDir, stat.name);
    const entry = await this.#cacheEntry(id, stat);
    entry.release();
    return entry.path;
  }

  async #cacheEntry(id: Uint8Array, stat: BlobStat) {
    const cache = this.#blobCache;
    // A call this client was not set up for, as a missing option of open() is: a TypeError, not a state of the store.
    if (cache === undefined) throw new TypeError(`openBlob: this client has no cacheDir: pass connect(url, { cacheDir }) to read blobs`);
    const name = cacheBlobName(this.#hello!.storeId, idHex(id), stat.blobSerial);
    return await cache.acquire(name, stat.length, (file) => this.#download(id, stat, file));
  }

  /**
   * One blobDownload call: the server pushes blobStart and blobChunks (each
   * written to `file` and hashed as it arrives, the hash running while the
   * kernel copies the chunk: writeAsync; the hash thread's pieces are read
   * from `file` once written), then replies. The channel reads
   * the next frame while a chunk is being written, and holds a chunk that
   * arrives before the last one's write is done. A background
   * fdatasync every BLOB_SYNC_BEHIND_BYTES (WritebackPacer, as putBlob's) leaves the cache's
   * final fdatasync little to do. Verifies length and BLAKE3 against what
   * blobStat said.
   */
  async #download(id: Uint8Array, stat: BlobStat, file: File): Promise<void> {
    // Backed by the download file: the hash thread reads its pieces there once written, and this thread copies nothing for it.
    const hasher = ParallelBlake3.create({ backing: file });
    try {
      await this.#downloadInto(id, stat, file, hasher);
    } finally {
      hasher.release();
    }
  }

  async #downloadInto(id: Uint8Array, stat: BlobStat, file: File, hasher: ParallelBlake3): Promise<void> {
    let pos = 0;
    let failure: Error | undefined;
    /** The chunk write and the background fdatasyncs in flight (none rejects): awaited before `file` goes back to the cache, even when the call fails. */
    let writing: Promise<void> | undefined;
    const writeback = new WritebackPacer(file, (e) => {
      failure ??= e as Error;
    });
    const reply = this.#call("blobDownload", [id, stat.blobSerial], (name, args): void | Promise<void> => {
      if (failure !== undefined) return;
      try {
        if (name === "blobStart") {
          const length = Number(toBigint(args[1]));
          if (length !== stat.length || !(args[2] instanceof Uint8Array) || !proofsEqual(args[2], stat.hash)) {
            throw new IntegrityError(`blob ${idHex(id)}: the download announces ${length} bytes or another hash than blobStat said`);
          }
        } else if (name === "blobChunk") {
          const data = args[1];
          if (!(data instanceof Uint8Array)) throw protocolError("blobChunk without bytes");
          if (pos + data.length > stat.length) throw new IntegrityError(`blob ${idHex(id)}: the download sent more than ${stat.length} bytes`);
          // The frame's buffer is reused once its bytes are written; reading goes on meanwhile.
          const release = this.#channel.consumedLater();
          const at = pos;
          pos += data.length;
          const start = (): void => {
            const written = file.writeAsync(data, at);
            writeback.wrote(at);
            hasher.update(data);
            writing = written.then(() => {
              release();
              try {
                hasher.written(at + data.length);
              } catch (e) {
                failure ??= e as Error;
              }
            }, (e) => {
              failure ??= e as Error;
              release();
            });
          };
          // One write in flight per file: a chunk that arrives while the last is still being written waits for it
          // (the channel reads nothing more meanwhile); otherwise the next frame is read while this one is written.
          if (writing === undefined) return start();
          return writing.then(() => (failure === undefined ? start() : release()));
        } else {
          throw protocolError(`unexpected push ${name} during a blob download`);
        }
      } catch (e) {
        failure = e as Error;
      }
    });
    try {
      await reply;
    } finally {
      await writing;
      await writeback.settled();
    }
    if (failure !== undefined) throw failure;
    if (pos !== stat.length) throw new IntegrityError(`blob ${idHex(id)}: the download ended after ${pos} of ${stat.length} bytes`);
    const digest = await hasher.digest();
    if (!proofsEqual(digest, stat.hash)) {
      throw new IntegrityError(`blob ${idHex(id)}: the downloaded bytes do not match the blob's BLAKE3 hash`, { file: file.path });
    }
  }

  /** The blob cache in use (undefined without cacheDir, or in shared-directory mode). For tests and tools. */
  get blobCache(): BlobCache | undefined {
    return this.#blobCache;
  }

  /**
   * One round trip to the server. Pushes are ordered with replies, so once
   * this resolves every invalidation of a commit made before the call has
   * been applied to this client's cache. Resolves with the server's last txid.
   *
   * @example
   * await other.commit();   // in another client
   * await remote.sync();    // then this one's cached reads are at least that new
   */
  async sync(): Promise<bigint> {
    this.#checkOpen();
    const txid = toBigint(await this.#call("ping", []));
    if (txid > this.#view) this.#view = txid;
    return txid;
  }

  // -------------------------------------------------------------------------
  // Admin

  /**
   * The server's store statistics (Store.stats()).
   *
   * @example
   * (await remote.stats()).keys
   */
  async stats(): Promise<StoreStats> {
    this.#checkOpen();
    return numbersOf(await this.#call("stats", []), ["lastTxid"]) as StoreStats;
  }

  /** The server's own counters: connections, commits, group commits, blob bytes... (ServerStats). */
  async serverStats(): Promise<ServerStats> {
    this.#checkOpen();
    return numbersOf(await this.#call("serverStats", []), ["lastTxid"]) as ServerStats;
  }

  /** Compacts the server's store (Store.compact()). */
  async compact(): Promise<CompactResult> {
    this.#checkWritable("compact");
    return numbersOf(await this.#call("compact", []), []) as CompactResult;
  }

  /** Writes a checkpoint of the server's store (Store.checkpoint()). */
  async checkpoint(): Promise<void> {
    this.#checkWritable("checkpoint");
    await this.#call("checkpoint", []);
  }

  /** Runs the server store's check (Store.check({ repair })). */
  async check(options: { repair?: boolean } = {}): Promise<unknown> {
    this.#checkOpen();
    return numbersOf(await this.#call("check", [{ repair: options.repair === true }]), []);
  }

  /**
   * Rolls back what is not committed and closes the connection. Idempotent;
   * afterwards every method throws StateError ECLOSED.
   *
   * @example
   * await remote.close();
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#transactionReset();
    // Written out, then closed: the server drops this connection's uncommitted writes.
    await this.#channel.end();
    this.#lost(undefined);
  }
}

// ---------------------------------------------------------------------------
// Helpers

function toBigint(v: unknown): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v === "number" && Number.isSafeInteger(v)) return BigInt(v);
  throw protocolError(`expected an integer, got ${describe(v)}`);
}

/** Turns the bigints msgpack gives for large integers back into numbers, except the named fields (txids). */
function numbersOf(v: unknown, keepBigint: string[]): unknown {
  if (typeof v === "bigint") return Number(v);
  if (Array.isArray(v)) return v.map((x) => numbersOf(x, keepBigint));
  if (v !== null && typeof v === "object" && !(v instanceof Uint8Array)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = keepBigint.includes(k) || k === "txid" ? x : numbersOf(x, keepBigint);
    return out;
  }
  return v;
}

function isPathSource(v: unknown): v is { path: string; move?: boolean } {
  return v !== null && typeof v === "object" && typeof (v as { path?: unknown }).path === "string" &&
    typeof (v as ReadableStream).getReader !== "function" && !(Symbol.asyncIterator in (v as object));
}

/** Feeds each chunk of a ReadableStream or AsyncIterable to `each`, awaiting it before reading the next. */
async function forEachChunk(source: unknown, each: (chunk: Uint8Array) => Promise<void>): Promise<void> {
  const check = (chunk: unknown): Uint8Array => {
    if (!(chunk instanceof Uint8Array)) throw new TypeError(`putBlob: stream chunks must be Uint8Array, got ${chunk === null ? "null" : typeof chunk}`);
    return chunk;
  };
  if (source !== null && typeof source === "object" && typeof (source as ReadableStream).getReader === "function") {
    const reader = (source as ReadableStream<Uint8Array>).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        await each(check(value));
      }
    } catch (e) {
      reader.cancel(e).catch(() => {});
      throw e;
    } finally {
      reader.releaseLock();
    }
    return;
  }
  if (source !== null && typeof source === "object" && Symbol.asyncIterator in source) {
    for await (const chunk of source as AsyncIterable<unknown>) await each(check(chunk));
    return;
  }
  throw new TypeError(`putBlob: source must be a ReadableStream, an AsyncIterable of Uint8Array, { path, move } or a Uint8Array, got ${source === null ? "null" : typeof source}`);
}

/**
 * A byte stream of the `length` bytes of `file`; `done` runs once, at the
 * end, on an error or on cancel. A BYOB reader's buffer is filled in place
 * (no allocation per chunk, memory flat whatever the blob's size); a
 * default reader gets fresh BLOB_READ_CHUNK-byte chunks it owns.
 */
function fileStream(file: File, length: number, done: () => void): ReadableStream<Uint8Array> {
  let pos = 0;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    done();
  };
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: BLOB_READ_CHUNK,
    pull(controller) {
      const request = controller.byobRequest!;
      try {
        const view = new Uint8Array(request.view!.buffer, request.view!.byteOffset, request.view!.byteLength);
        const want = Math.min(view.length, length - pos);
        const n = want > 0 ? file.read(view.subarray(0, want), pos) : 0;
        if (n < want) throw new IntegrityError(`blob file ${file.path} ended after ${pos + n} of ${length} bytes`, { file: file.path, offset: pos + n });
        pos += n;
        if (pos < length) {
          request.respond(n);
          return;
        }
        finish();
        if (n > 0) {
          request.respond(n);
          controller.close();
        } else {
          controller.close();
          request.respond(0); // hands a BYOB reader its buffer back with done: true
        }
      } catch (e) {
        finish();
        controller.error(e);
      }
    },
    cancel() {
      finish();
    },
  }) as ReadableStream<Uint8Array>;
}
