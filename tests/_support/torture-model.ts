/**
 * The model crash tests check a recovered store against (tests/90.crash,
 * tests/91.torture, scripts/torture.mjs): what the store must hold after a
 * power loss or a kill -9, given what the writer was told.
 *
 * The rule (DESIGN.md: "a crash never shows half a transaction"):
 * - every transaction whose commit() returned is there, whole;
 * - the one in flight (commit() called, not returned) is there whole or
 *   not at all; an in-flight compact() may have committed any number of its
 *   steps, but never changes what a key holds;
 * - nothing else: no key, value or transaction id the writer did not make.
 *
 * Keys are small numbers turned into 32-byte ids (`keyId`), values are
 * compared by digest (length and CRC-32), so a model of thousands of
 * transactions stays small and a child process can report it on one line.
 *
 * @example
 * const model = new CommitModel();
 * const txn = new Map([[1, valueDigest(bytes)]]);
 * model.beginCommit(store.nextTxid, txn); store.commit(); model.ack(txid);
 * const problem = model.verify(observeStore(store)); // undefined when the store obeys the rule
 */
import { crc32 } from "../../src/wasm.ts";
import type { Store } from "../../src/store.ts";
import { KEY_SIZE } from "../../src/format.ts";

/** Key number → value digest. */
export type Content = Map<number, string>;

/** The effects of one transaction, in order: key number → digest, or null for a delete. */
export type Effects = Map<number, string | null>;

/** What a store holds, as the model compares it. */
export interface Observed {
  lastTxid: bigint;
  content: Content;
  /** Ids that are not model keys (there must be none). */
  foreign: string[];
}

/** Chunk size TrackedStore.putBlob streams in: small, so a blob takes several writes. */
const BLOB_CHUNK_BYTES = 1000;

/** The filler of bytes 4..31 of a model key: ids not of this shape are foreign. */
const KEY_FILLER = 0x5a;

/** The 32-byte id of model key `n`: n as u32le, then a fixed filler. */
export function keyId(n: number): Uint8Array {
  const id = new Uint8Array(KEY_SIZE).fill(KEY_FILLER);
  new DataView(id.buffer).setUint32(0, n, true);
  return id;
}

/** The key number of a model id, or -1 for an id the model never makes. */
export function keyNumber(id: Uint8Array): number {
  if (id.length !== KEY_SIZE) return -1;
  for (let i = 4; i < KEY_SIZE; i++) if (id[i] !== KEY_FILLER) return -1;
  return new DataView(id.buffer, id.byteOffset, id.byteLength).getUint32(0, true);
}

/** A value's digest: its length and CRC-32, enough to tell versions of a key apart. */
export function valueDigest(bytes: Uint8Array): string {
  return `${bytes.length}:${crc32(bytes).toString(16)}`;
}

/**
 * Deterministic value bytes for (seed, n, length): the writer makes them, a
 * checker could remake them; cheap (xorshift), not cryptographic.
 */
export function valueBytes(seed: number, n: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(n + 1, 0xc2b2ae35)) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Reads every key of an open store (values through get(), so each record's CRC is verified). */
export function observeStore(store: Store): Observed {
  const content: Content = new Map();
  const foreign: string[] = [];
  for (const id of store.list()) {
    const n = keyNumber(id);
    if (n < 0) {
      foreign.push(Array.from(id, (b) => b.toString(16).padStart(2, "0")).join(""));
      continue;
    }
    const value = store.get(id);
    // A blob id reads as undefined through get(); the workloads here store plain values only.
    content.set(n, value === undefined ? "blob" : valueDigest(value));
  }
  return { lastTxid: store.stats().lastTxid, content, foreign };
}

/** A blob's digest: "blob:" and the digest of its bytes (so a blob and a value of the same bytes differ). */
export function blobDigest(length: number, crc: number): string {
  return `blob:${length}:${crc.toString(16)}`;
}

/**
 * observeStore, with each blob read through openBlob (which verifies its
 * length and BLAKE3 hash) and digested as `blobDigest`.
 */
export async function observeStoreWithBlobs(store: Store): Promise<Observed> {
  const observed = observeStore(store);
  for (const [n, digest] of observed.content) {
    if (digest !== "blob") continue;
    const stream = store.openBlob(keyId(n));
    if (stream === undefined) throw new Error(`key ${n}: has() is true, get() and openBlob() give nothing`);
    let length = 0;
    let crc = 0;
    const reader = stream.getReader();
    for (let r = await reader.read(); !r.done; r = await reader.read()) {
      crc = crc32(r.value, crc);
      length += r.value.length;
    }
    observed.content.set(n, blobDigest(length, crc));
  }
  return observed;
}

/** The in-flight call a crash may have interrupted. */
export type InFlight = { kind: "commit"; txid: bigint; content: Content } | { kind: "compact" };

function contentDiff(want: Content, got: Content, limit = 5): string {
  const out: string[] = [];
  for (const [k, v] of want) if (got.get(k) !== v) out.push(`key ${k}: want ${v}, got ${got.get(k) ?? "absent"}`);
  for (const [k, v] of got) if (!want.has(k)) out.push(`key ${k}: want absent, got ${v}`);
  return out.length <= limit ? out.join("; ") : `${out.slice(0, limit).join("; ")}; and ${out.length - limit} more`;
}

function contentEqual(a: Content, b: Content): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

/** Applies a transaction's effects to a copy of `base`. */
export function applyEffects(base: Content, effects: Effects): Content {
  const out = new Map(base);
  for (const [k, v] of effects) {
    if (v === null) out.delete(k);
    else out.set(k, v);
  }
  return out;
}

/** The acknowledged state of a store and the call in flight, if any. */
export class CommitModel {
  /** Content as of the last acknowledged commit. */
  content: Content = new Map();
  /** Transaction id of the last acknowledged commit (or compaction step). */
  txid = 0n;
  inflight: InFlight | undefined;
  /** Acknowledged commits so far (compactions not counted). */
  commits = 0;

  /** An independent copy (what one recovery adopts does not leak into another). */
  clone(): CommitModel {
    const copy = new CommitModel();
    copy.content = new Map(this.content);
    copy.txid = this.txid;
    copy.inflight = this.inflight;
    copy.commits = this.commits;
    return copy;
  }

  /** commit() is about to be called for a transaction with these effects, which will get `txid`. */
  beginCommit(txid: bigint, effects: Effects): void {
    this.inflight = { kind: "commit", txid, content: applyEffects(this.content, effects) };
  }

  /** commit() returned `txid`. */
  ack(txid: bigint): void {
    const f = this.inflight;
    if (f === undefined || f.kind !== "commit") throw new Error(`model: ack of ${txid} with no commit in flight`);
    if (f.txid !== txid) throw new Error(`model: commit returned ${txid}, the store said the next txid was ${f.txid}`);
    this.content = f.content;
    this.txid = txid;
    this.inflight = undefined;
    this.commits++;
  }

  /** compact() is about to be called. */
  beginCompact(): void {
    this.inflight = { kind: "compact" };
  }

  /** compact() returned; the store's last txid is now `txid`. */
  ackCompact(txid: bigint): void {
    if (this.inflight?.kind !== "compact") throw new Error("model: compact acknowledged with none in flight");
    if (txid < this.txid) throw new Error(`model: compact left txid ${txid} below ${this.txid}`);
    this.txid = txid;
    this.inflight = undefined;
  }

  /**
   * Checks a recovered store against the rule at the top of this file.
   * Returns a description of the first violation, or undefined.
   */
  verify(got: Observed): string | undefined {
    if (got.foreign.length > 0) return `ids no writer made: ${got.foreign.slice(0, 3).join(", ")}`;
    const f = this.inflight;
    if (got.lastTxid === this.txid) {
      if (contentEqual(got.content, this.content)) return undefined;
      return `at txid ${got.lastTxid} (the last acknowledged) the content differs from the model: ${contentDiff(this.content, got.content)}`;
    }
    if (got.lastTxid < this.txid) {
      return `lost acknowledged transactions: the store is at txid ${got.lastTxid}, the writer was told ${this.txid} was durable`;
    }
    if (f?.kind === "commit" && got.lastTxid === f.txid) {
      if (contentEqual(got.content, f.content)) return undefined;
      return `the in-flight transaction ${f.txid} is there partly: ${contentDiff(f.content, got.content)}`;
    }
    if (f?.kind === "compact") {
      if (contentEqual(got.content, this.content)) return undefined;
      return `an in-flight compaction (txid ${this.txid} → ${got.lastTxid}) changed the content: ${contentDiff(this.content, got.content)}`;
    }
    return `txid ${got.lastTxid} was never begun (last acknowledged ${this.txid}, in flight ${f?.kind === "commit" ? f.txid : "none"})`;
  }

  /** After a verified recovery: what the store holds becomes the acknowledged state. */
  adopt(got: Observed): void {
    this.content = new Map(got.content);
    this.txid = got.lastTxid;
    this.inflight = undefined;
  }
}

/**
 * A store with its model kept in step, for in-process workloads: each call
 * tells the model what is about to happen before the store does it, so
 * whatever the store throws (a power loss, ENOSPC), the model knows what
 * may have happened.
 *
 * @example
 * const t = new TrackedStore(store, new CommitModel());
 * t.put(1, 100); t.delete(2); t.commit();
 */
export class TrackedStore {
  /** The open transaction's effects. */
  readonly txn: Effects = new Map();
  constructor(public store: Store, readonly model: CommitModel, readonly seed = 1) {}

  /** Puts a deterministic value of `length` bytes under key `n`; `version` tells versions apart. */
  put(n: number, length: number, version = 0): void {
    const bytes = valueBytes(this.seed + version * 7919, n, length);
    this.txn.set(n, valueDigest(bytes));
    this.store.put(keyId(n), bytes);
  }

  /** Puts a deterministic blob of `length` bytes under key `n`, streamed in chunks. */
  async putBlob(n: number, length: number, version = 0): Promise<void> {
    const bytes = valueBytes(this.seed + version * 7919 + 1, n, length);
    this.txn.set(n, blobDigest(bytes.length, crc32(bytes)));
    await this.store.putBlob(keyId(n), (async function* () {
      for (let i = 0; i < bytes.length; i += BLOB_CHUNK_BYTES) yield bytes.subarray(i, Math.min(bytes.length, i + BLOB_CHUNK_BYTES));
    })());
  }

  delete(n: number): boolean {
    this.txn.set(n, null);
    return this.store.delete(keyId(n));
  }

  commit(): bigint {
    if (!this.store.inTransaction) {
      const txid = this.store.commit();
      if (txid !== this.model.txid) throw new Error(`empty commit returned ${txid}, not the last txid ${this.model.txid}`);
      this.txn.clear();
      return txid;
    }
    this.model.beginCommit(this.store.nextTxid, this.txn);
    const txid = this.store.commit();
    this.model.ack(txid);
    this.txn.clear();
    return txid;
  }

  rollback(): void {
    this.store.rollback();
    this.txn.clear();
  }

  compact(): void {
    this.model.beginCompact();
    this.store.compact();
    this.model.ackCompact(this.store.stats().lastTxid);
  }
}
