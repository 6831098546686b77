/**
 * Blobs: values too large for a record, kept as files under
 * `STORE/blobs/<xx>/<id-hex>.<serial>` and streamed in and out in chunks,
 * never held whole in memory. The segment holds a BLOB record per blob
 * (length, BLAKE3-256 of the content, serial); the file holds the bytes.
 *
 * Map: limits · sources and results · per-store state (`BlobFiles`: the
 * transaction hooks) · putBlob (`putBlob` → `putBlobStage` →
 * `putBlobStageStream` / `putBlobStagePath` → `putBlobAttach`) · openBlob ·
 * blobPath · the orphan sweep (`sweepBlobFiles`) · helpers.
 *
 * ## Choices
 *
 * - The engine is synchronous; blobs are async only at the edges. A chunk
 *   of the source is written with `File.writeAsync` at the running offset
 *   (small chunks are gathered into BLOB_WRITE_BUFFER_SIZE first, in two
 *   buffers that take turns), and hashed while the kernel copies it: the
 *   write runs on the runtime's I/O threads, the hash on ours, so a blob
 *   is written in about the time of the slower of the two, not their sum.
 *   Every BLOB_SYNC_BEHIND_BYTES a background fdatasync starts writeback,
 *   so the final one, which the commit waits for, has little left to do.
 *   The next chunk is asked for only once the last one is in the page cache
 *   (a source may reuse its buffer): a ReadableStream is read with a
 *   reader, one chunk at a time (backpressure). Reading is a byte stream
 *   (`type: "bytes"`) whose `pull` does one synchronous `File.read`
 *   straight into the reader's buffer: a BYOB reader (`getReader({ mode:
 *   "byob" })`) gets its own buffer back, filled, so a 4 GiB read
 *   allocates nothing and memory stays flat; a default reader gets fresh
 *   BLOB_READ_CHUNK_SIZE buffers (the stream allocates them), which the
 *   garbage collector reclaims in its own time.
 *   Nothing is read ahead of a pending read (high water mark 0).
 * - The hash is BLAKE3-256, computed while the bytes stream past, one
 *   hasher per putBlob and per openBlob: `blake3parallel.ts`, which hands
 *   256 KiB subtrees to a worker thread once a blob passes 8 MiB (one
 *   core hashes at about 1 GB/s, slower than a disk writes or the page
 *   cache reads; see src/hashthread.ts) and hashes the rest itself.
 * - A blob is written to `blobs/<xx>/<id-hex>.<nonce>.tmp` (same directory
 *   as its final name, so the rename needs one directory sync), fdatasync'ed,
 *   and only then gets its BLOB record. The serial is `store.nextTxid` when
 *   the record is appended: the transaction that will commit it, so a final
 *   name is never reused (transaction ids only grow).
 * - Commit (the store's `beforeCommit` hook, before the COMMIT record):
 *   rename each temp file to its final name, make the names durable (the
 *   first time this open store uses `blobs/` and `blobs/<xx>`, a syncDir of
 *   their parents too, as nothing says an earlier process synced them; then
 *   a syncDir of each `blobs/<xx>` renamed into), then the store writes and
 *   fdatasyncs the COMMIT. `afterCommit` unlinks the files the transaction
 *   made obsolete (overwritten or deleted blobs); until then the old file is
 *   what the last commit points to. So after a crash at any point a key
 *   shows the old blob or the new one, complete, and never a partial file
 *   under a committed name.
 * - Rollback (`afterRollback`) unlinks the transaction's temp files (and any
 *   already renamed by a commit that then failed).
 * - The orphan sweep runs at open (the store calls `sweepBlobFiles` right
 *   after recovery, when not read-only): it unlinks every `*.tmp` under
 *   `blobs/<xx>/` and every `<id-hex>.<serial>` file that no committed BLOB
 *   record names (a crash between rename and COMMIT, or between COMMIT and
 *   the unlink of an obsolete file). Names it does not recognise are left
 *   alone (the shared-directory mode of the server may put files there).
 * - A putBlob belongs to the transaction open when it started. If that
 *   transaction ends (commit or rollback) before the source is exhausted,
 *   putBlob rejects with StateError EBUSY and leaves no file: its bytes
 *   never silently join the next transaction. Other commits are not held up
 *   by a slow upload. The server, whose uploads outlive other clients'
 *   commits, uses the two halves directly: `putBlobStage` (async, touches no
 *   transaction) and then `putBlobAttach` (sync, in the transaction being
 *   voted).
 * - Two putBlob of one id in a transaction: the last one attached wins; the
 *   first one's temp file is removed at once. A put or delete of a blob's id
 *   in the transaction does the same for a pending blob, and marks a
 *   committed blob's file obsolete (the store calls `BlobFiles.replacing`).
 * - `{ path, move: true }` hashes the caller's file where it is, then
 *   renames it into the store (ZEO's storeBlob moving the file into its
 *   cache); across filesystems (EXDEV) it falls back to a streamed copy and
 *   then unlinks the caller's file. Without `move` the file is copied and
 *   left alone. A file changed by its owner between the hash and the
 *   rename is the owner's race: openBlob's verification reports it.
 * - openBlob opens the file when called, so a later delete and commit does
 *   not break a reader in progress (the open file outlives its name). It
 *   verifies the length and the BLAKE3 hash BEFORE handing out the last
 *   chunk: a reader that sees the end of the stream has seen verified
 *   bytes; a mismatch errors the stream with IntegrityError naming the file.
 */
import { ParallelBlake3 } from "./blake3parallel.ts";
import type { File, FileSystem } from "./fs.ts";
import { FsError, isFsError } from "./fs.ts";
import { assert, BLOB_HASH_SIZE, IntegrityError, KEY_SIZE, NotFoundError, StateError } from "./format.ts";
import { basenameOf, dirnameOf, parseBlobName, type StorePaths } from "./paths.ts";
import { storageError } from "./segments.ts";
import type { BlobRecordInfo, Store, TransactionHooks } from "./store.ts";

// ---------------------------------------------------------------------------
// Limits

/** Bytes one `pull` of an openBlob stream reads: large enough that a syscall and a promise per chunk cost nothing, small enough to keep memory flat. */
export const BLOB_READ_CHUNK_SIZE = 1024 * 1024;
/** Source chunks smaller than this are gathered into one write of this size (socket frames are small); larger ones are written as they come. */
export const BLOB_WRITE_BUFFER_SIZE = 1024 * 1024;
/**
 * A blob temp file gets a background fdatasync (`File.datasyncAsync`) each
 * time this many bytes were written since the last one began, as RocksDB's
 * bytes_per_sync: the kernel would otherwise hold a whole 1 GiB blob dirty
 * until the final fdatasync, which then waits for all of it; now the disk
 * writes while we hash, and the last fdatasync finds at most about this
 * much left. 32 MiB: a few tens of ms of disk time, far below the dirty
 * page limits, and few enough syncs (32 per GiB) to cost nothing.
 */
export const BLOB_SYNC_BEHIND_BYTES = 32 * 1024 * 1024;
/** Bytes per read when hashing or copying a `{ path }` source. */
export const BLOB_COPY_CHUNK_SIZE = 1024 * 1024;
/** A file copy or hash gives the event loop a turn after this many bytes, so a server keeps serving during a long copy. */
export const BLOB_YIELD_BYTES = 16 * 1024 * 1024;
/** Random bytes in a temp file's name: two uploads of one id never share a temp file. */
const BLOB_NONCE_BYTES = 8;
/** Largest blob: lengths are u64 in the record, but offsets in the File contract stay below 2^53. */
export const BLOB_LENGTH_MAX = Number.MAX_SAFE_INTEGER;

if (BLOB_READ_CHUNK_SIZE <= 0 || BLOB_WRITE_BUFFER_SIZE <= 0 || BLOB_COPY_CHUNK_SIZE <= 0) throw new Error("blobs: chunk sizes must be positive");
if (BLOB_YIELD_BYTES < BLOB_COPY_CHUNK_SIZE) throw new Error("blobs: BLOB_YIELD_BYTES must hold at least one copy chunk");

// ---------------------------------------------------------------------------
// Sources and results

/** A file to store: copied, or with `move: true` renamed into the store (copied across filesystems, then removed). */
export interface BlobPathSource {
  path: string;
  /** Rename the file into the store instead of copying it; the caller's name is gone afterwards. Default false. */
  move?: boolean;
}

/** What putBlob takes. */
export type BlobSource = ReadableStream<Uint8Array> | AsyncIterable<Uint8Array> | BlobPathSource;

/** What putBlob stored: the blob's length in bytes, BLAKE3-256 hash and serial (the transaction id that commits it). */
export interface BlobInfo {
  length: number;
  hash: Uint8Array;
  serial: bigint;
}

/**
 * Options of openBlob.
 *
 * @example
 * store.openBlob(id, { verify: false }) // trust the disk: skip the hash, still check the length
 */
export interface OpenBlobOptions {
  /** Check the BLAKE3 hash at the end of the stream (the length is always checked). Default true. */
  verify?: boolean;
}

const OPEN_BLOB_OPTION_NAMES = ["verify"];

/** A blob written to its temp file and fdatasync'ed, not yet part of any transaction (see putBlobStage). */
export interface StagedBlob {
  readonly id: Uint8Array;
  readonly idHex: string;
  /** The temp file holding the bytes. */
  readonly temp: string;
  readonly length: number;
  readonly hash: Uint8Array;
}

// ---------------------------------------------------------------------------
// Per-store state and the transaction hooks

/** A blob of the open transaction: its record is appended; its file waits under `temp` for the commit. */
interface PendingBlob {
  id: Uint8Array;
  temp: string;
  final: string;
  serial: bigint;
  /** Set once beforeCommit renamed temp to final (a commit failing after that must remove `final`). */
  renamed: boolean;
}

/**
 * The blob bookkeeping of one open store: the open transaction's pending
 * blobs and obsolete files, and which directories this process made durable.
 * Registered as the store's transaction hooks on first use.
 */
export class BlobFiles implements TransactionHooks {
  /** Pending blobs by id hex: at most one per id (the last putBlob wins). */
  private readonly pendingBlobs = new Map<string, PendingBlob>();
  /** Committed blob files the open transaction replaced or deleted: unlinked once its commit is durable. */
  private obsolete: string[] = [];
  /** Directories this object created or found (no mkdir needed). */
  private readonly knownDirs = new Set<string>();
  /** Directories whose own entry this process made durable (its parent synced after it existed). */
  private readonly durableDirs = new Set<string>();
  /** Bumped at every commit and rollback: a putBlob that started in another generation lost its transaction. */
  generation = 0;

  constructor(private readonly store: Store) {}

  private get fs(): FileSystem {
    return this.store.fs;
  }
  private get paths(): StorePaths {
    return this.store.paths;
  }

  /** Creates blobs/ and blobs/<xx> for `idHex` when missing. */
  ensureDir(idHex: string): void {
    const dir = this.paths.blobDir(idHex);
    if (this.knownDirs.has(dir)) return;
    for (const d of [this.paths.blobs, dir]) {
      if (this.knownDirs.has(d)) continue;
      try {
        this.fs.mkdir(d);
      } catch (e) {
        if (!isFsError(e, "EEXIST")) throw storageError(e, this.store.path, d, "putBlob: create blob directory");
      }
      this.knownDirs.add(d);
    }
  }

  /** The file holding the bytes of `record` as this store sees it now: a pending blob's temp file, else the committed name. */
  currentPath(idHex: string, record: BlobRecordInfo): string {
    const p = this.pendingBlobs.get(idHex);
    if (p !== undefined && p.serial === record.serial) return p.renamed ? p.final : p.temp;
    return this.paths.blob(idHex, record.serial);
  }

  /** Adds a staged blob, whose record was just appended with `serial`, to the open transaction. */
  attach(staged: StagedBlob, serial: bigint, old: BlobRecordInfo | undefined): void {
    this.noteReplaced(staged.idHex, old);
    this.pendingBlobs.set(staged.idHex, {
      id: staged.id, temp: staged.temp, final: this.paths.blob(staged.idHex, serial), serial, renamed: false,
    });
  }

  /**
   * Called by the store before a put or delete overwrites the blob stored
   * under `id`: a pending blob's file goes at once, a committed one's after
   * the commit.
   */
  replacing(id: Uint8Array): void {
    this.noteReplaced(idHex(id), this.store.blobRecord(id));
  }

  private noteReplaced(hex: string, old: BlobRecordInfo | undefined): void {
    if (old === undefined) return;
    const p = this.pendingBlobs.get(hex);
    if (p !== undefined && p.serial === old.serial) {
      unlinkQuiet(this.fs, p.renamed ? p.final : p.temp);
      this.pendingBlobs.delete(hex);
      return;
    }
    // A record of the open transaction always has a pending entry; anything else is committed.
    if (old.serial < this.store.nextTxid) this.obsolete.push(this.paths.blob(hex, old.serial));
  }

  // -- TransactionHooks --------------------------------------------------------

  pending(): boolean {
    return this.pendingBlobs.size > 0;
  }

  beforeCommit(txid: bigint): void {
    if (this.pendingBlobs.size === 0) return;
    const dirs = new Set<string>();
    let file = "";
    try {
      for (const [hex, p] of this.pendingBlobs) {
        const record = this.store.blobRecord(p.id);
        if (record === undefined || record.serial !== p.serial) {
          // Overwritten or deleted later in the transaction by a path that did not tell us: nothing to keep.
          unlinkQuiet(this.fs, p.temp);
          this.pendingBlobs.delete(hex);
          continue;
        }
        assert(p.serial === txid, `pending blob ${hex} has serial ${p.serial}, committing ${txid}`);
        file = p.final;
        this.fs.rename(p.temp, p.final);
        p.renamed = true;
        dirs.add(dirnameOf(p.final));
      }
      const blobs = this.paths.blobs;
      for (const dir of dirs) {
        if (this.durableDirs.has(dir)) continue;
        if (!this.durableDirs.has(blobs)) {
          file = this.store.path;
          this.fs.syncDir(this.store.path);
          this.durableDirs.add(blobs);
        }
        file = blobs;
        this.fs.syncDir(blobs);
        this.durableDirs.add(dir);
      }
      for (const dir of dirs) {
        file = dir;
        this.fs.syncDir(dir);
      }
    } catch (e) {
      throw storageError(e, this.store.path, file, "commit: make blob files durable");
    }
  }

  afterCommit(_txid: bigint): void {
    for (const p of this.pendingBlobs.values()) assert(p.renamed, "every pending blob was renamed before the commit");
    this.pendingBlobs.clear();
    // The commit is durable: the old files are no longer named by any committed record.
    for (const path of this.obsolete) unlinkQuiet(this.fs, path);
    this.obsolete = [];
    this.generation++;
  }

  afterRollback(): void {
    for (const p of this.pendingBlobs.values()) unlinkQuiet(this.fs, p.renamed ? p.final : p.temp);
    this.pendingBlobs.clear();
    this.obsolete = [];
    this.generation++;
  }
}

const blobFilesByStore = new WeakMap<Store, BlobFiles>();

/** The blob state of `store`, created (and its hooks registered) on first use. */
export function blobFilesOf(store: Store): BlobFiles {
  let files = blobFilesByStore.get(store);
  if (files === undefined) {
    files = new BlobFiles(store);
    blobFilesByStore.set(store, files);
    store.addHooks(files);
  }
  return files;
}

// ---------------------------------------------------------------------------
// putBlob

/**
 * Stores the bytes of `source` under `id` in the open transaction: streamed
 * to a temp file (hashed on the way, fdatasync'ed), then a BLOB record is
 * appended; the commit renames the file into place. The store wrapper has
 * checked that the store is writable and `id` is 32 bytes.
 *
 * Errors: TypeError for a source of the wrong kind or a chunk that is not a
 * Uint8Array; NotFoundError for a `{ path }` that does not exist;
 * StorageError for a write that failed (ENOSPC...); the source's own error
 * when the source fails; StateError EBUSY when the transaction ended while
 * streaming, ECLOSED when the store was closed. In every case no file is
 * left. The transaction is as it was, except after a StorageError while
 * appending the BLOB record: like any failed write, that rolls the whole
 * transaction back (its message says so), since a half-written record must
 * never reach a commit.
 *
 * @example
 * await putBlob(store, id, readable); store.commit();
 */
export async function putBlob(store: Store, id: Uint8Array, source: BlobSource): Promise<BlobInfo> {
  const files = blobFilesOf(store);
  const generation = files.generation;
  const hex = idHex(id);
  const stillOurs = (): void => {
    if (store.closed) throw new StateError("ECLOSED", `putBlob of ${hex}: store ${store.path} was closed while the blob was streaming; nothing was stored`, { store: store.path });
    if (files.generation !== generation) {
      throw new StateError(
        "EBUSY",
        `putBlob of ${hex}: the transaction it was started in ended (commit or rollback) before the blob finished streaming; ` +
          `nothing was stored (await putBlob before commit)`,
        { store: store.path },
      );
    }
  };
  const staged = await putBlobStage(store, id, source, stillOurs);
  try {
    stillOurs();
  } catch (e) {
    unlinkQuiet(store.fs, staged.temp);
    throw e;
  }
  return putBlobAttach(store, staged);
}

/**
 * The first half of putBlob, for the server: writes `source` to a temp file
 * of the store, hashed and fdatasync'ed, outside any transaction (other
 * commits may come and go meanwhile). Give the result to `putBlobAttach`
 * (in the transaction that should hold it) or `putBlobDiscard`. Open
 * removes a staged file that was neither.
 *
 * `check` runs before each chunk is written; what it throws aborts the put.
 *
 * @example
 * const staged = await putBlobStage(store, id, frames); // ... later, at vote:
 * putBlobAttach(store, staged);
 */
export async function putBlobStage(store: Store, id: Uint8Array, source: BlobSource, check: () => void = () => {}): Promise<StagedBlob> {
  if (!(id instanceof Uint8Array) || id.length !== KEY_SIZE) {
    throw new TypeError(`putBlob: id must be a Uint8Array of ${KEY_SIZE} bytes, got ${id instanceof Uint8Array ? `${id.length} bytes` : typeof id}`);
  }
  const kind = sourceKind(source);
  const files = blobFilesOf(store);
  const hex = idHex(id);
  check();
  files.ensureDir(hex);
  const temp = store.paths.blobTemp(hex, randomNonce());
  const written = kind === "path"
    ? await putBlobStagePath(store, source as BlobPathSource, temp, check)
    : await putBlobStageStream(store, source as ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>, temp, check);
  return { id: id.slice(), idHex: hex, temp, length: written.length, hash: written.hash };
}

/**
 * The second half of putBlob: appends the BLOB record of a staged blob to
 * the open transaction (serial: `store.nextTxid`), replacing what `id` held.
 * On any error the staged file is removed.
 *
 * @example
 * const info = putBlobAttach(store, staged); store.commit();
 */
export function putBlobAttach(store: Store, staged: StagedBlob): BlobInfo {
  const files = blobFilesOf(store);
  let attached = false;
  try {
    // Read what is replaced before the append changes it; the append checks the store is writable.
    const old = store.blobRecord(staged.id);
    const serial = store.nextTxid;
    store.appendBlobRecord(staged.id, BigInt(staged.length), staged.hash, serial);
    files.attach(staged, serial, old);
    attached = true;
    return { length: staged.length, hash: staged.hash.slice(), serial };
  } finally {
    if (!attached) unlinkQuiet(store.fs, staged.temp);
  }
}

/** Removes a staged blob that will not be attached. */
export function putBlobDiscard(store: Store, staged: StagedBlob): void {
  unlinkQuiet(store.fs, staged.temp);
}

/** Which kind of source this is; TypeError for anything else. */
function sourceKind(source: unknown): "stream" | "iterable" | "path" {
  if (source !== null && typeof source === "object") {
    if (typeof (source as ReadableStream).getReader === "function") return "stream";
    if (Symbol.asyncIterator in source) return "iterable";
    const p = source as Partial<BlobPathSource>;
    if (typeof p.path === "string") {
      if (p.path === "") throw new TypeError("putBlob: source.path is empty");
      if (p.move !== undefined && typeof p.move !== "boolean") throw new TypeError(`putBlob: source.move must be a boolean, got ${typeof p.move}`);
      for (const k of Object.keys(source)) {
        if (k !== "path" && k !== "move") throw new TypeError(`putBlob: unknown source option "${k}" (known: path, move)`);
      }
      return "path";
    }
  }
  const what = source instanceof Uint8Array ? "a Uint8Array (use put() for values up to MAX_OBJECT_SIZE, or pass [bytes] as a stream)" : source === null ? "null" : typeof source;
  throw new TypeError(`putBlob: source must be a ReadableStream, an AsyncIterable of Uint8Array, or { path, move }, got ${what}`);
}

/** Streams chunks into `temp` while hashing them. Cancels the source and removes `temp` on any error. */
async function putBlobStageStream(
  store: Store, source: ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>, temp: string, check: () => void,
): Promise<{ length: number; hash: Uint8Array }> {
  const writer = new BlobTempWriter(store, temp);
  let stopSource: (reason: unknown) => void = () => {};
  try {
    const take = async (chunk: unknown): Promise<void> => {
      if (!(chunk instanceof Uint8Array)) {
        throw new TypeError(`putBlob: stream chunks must be Uint8Array, got ${chunk === null ? "null" : typeof chunk}`);
      }
      check();
      await writer.push(chunk);
    };
    if (typeof (source as ReadableStream<Uint8Array>).getReader === "function") {
      const reader = (source as ReadableStream<Uint8Array>).getReader();
      stopSource = (reason) => {
        reader.cancel(reason).catch(() => {});
      };
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        await take(value);
      }
      reader.releaseLock();
    } else {
      const it = (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
      stopSource = () => {
        it.return?.()?.catch?.(() => {});
      };
      for (;;) {
        const { done, value } = await it.next();
        if (done) break;
        await take(value);
      }
    }
    check();
    return await writer.finish();
  } catch (e) {
    // The source's error is passed on as is; ours cancel the source so its producer stops.
    stopSource(e);
    await writer.abort();
    throw e;
  } finally {
    writer.release();
  }
}

/** `{ path }`: copies (hashing), or with `move` hashes in place and renames (copy + unlink across filesystems). */
async function putBlobStagePath(
  store: Store, source: BlobPathSource, temp: string, check: () => void,
): Promise<{ length: number; hash: Uint8Array }> {
  const fs = store.fs;
  const from = source.path;
  let st;
  try {
    st = fs.stat(from);
  } catch (e) {
    throw storageError(e, store.path, from, "putBlob: stat source file");
  }
  if (st === undefined) throw new NotFoundError(`putBlob: source file ${from} does not exist`, { store: store.path, file: from });
  if (!st.isFile) throw new NotFoundError(`putBlob: source ${from} is not a file (a directory?)`, { store: store.path, file: from });
  if (source.move === true) {
    putBlobCheckMoveSource(store, from);
    const hashed = await hashFile(store, from, check);
    check();
    try {
      fs.rename(from, temp);
    } catch (e) {
      if (!isFsError(e, "EXDEV")) throw storageError(e, store.path, from, `putBlob: move source file to ${temp}`);
      // Another filesystem: copy (hashing again, so the record matches what landed), then remove the caller's file.
      const copied = await copyFile(store, from, temp, check);
      try {
        fs.unlink(from);
      } catch (e2) {
        unlinkQuiet(fs, temp);
        throw storageError(e2, store.path, from, "putBlob: remove moved source file after copying it across filesystems");
      }
      return copied;
    }
    // The bytes are ours now; the caller may never have synced them.
    try {
      const f = fs.open(temp, "r");
      try {
        f.datasync();
      } finally {
        f.close();
      }
    } catch (e) {
      unlinkQuiet(fs, temp);
      throw storageError(e, store.path, temp, "putBlob: fdatasync moved file");
    }
    return hashed;
  }
  return copyFile(store, from, temp, check);
}

/** Refuses to move a file the store itself owns (a blob, a temp file, a segment...): that would destroy it. */
function putBlobCheckMoveSource(store: Store, from: string): void {
  const fs = store.fs;
  const abs = fs.resolve(from);
  const root = fs.resolve(store.path) + "/";
  if (!abs.startsWith(root)) return;
  const blobs = fs.resolve(store.paths.blobs) + "/";
  // Under blobs/, only names the store does not use (a shared client cache's download files) may be moved in.
  if (abs.startsWith(blobs) && parseBlobName(basenameOf(abs)) === undefined) return;
  throw new TypeError(`putBlob: cannot move ${from}: it is a file of store ${store.path}`);
}

/** The length and BLAKE3 of a file, read in chunks (the hash thread reads its pieces from the file itself). */
async function hashFile(store: Store, path: string, check: () => void): Promise<{ length: number; hash: Uint8Array }> {
  const file = openSource(store, path);
  const hasher = ParallelBlake3.create({ backing: file });
  try {
    let read = 0;
    const length = await readChunks(store, file, check, (chunk) => {
      hasher.update(chunk);
      read += chunk.length;
      hasher.written(read);
    });
    return { length, hash: await hasher.digest() };
  } finally {
    // The hasher first: its thread may be reading the file.
    hasher.release();
    file.close();
  }
}

/** Copies `from` into a new temp file, hashing; removes the temp file on error. */
async function copyFile(store: Store, from: string, temp: string, check: () => void): Promise<{ length: number; hash: Uint8Array }> {
  const src = openSource(store, from);
  const writer = new BlobTempWriter(store, temp);
  try {
    await readChunks(store, src, check, (chunk) => writer.push(chunk));
    return await writer.finish();
  } catch (e) {
    await writer.abort();
    throw e;
  } finally {
    src.close();
    writer.release();
  }
}

function openSource(store: Store, path: string): File {
  try {
    return store.fs.open(path, "r");
  } catch (e) {
    if (isFsError(e, "ENOENT")) throw new NotFoundError(`putBlob: source file ${path} does not exist`, { store: store.path, file: path });
    throw storageError(e, store.path, path, "putBlob: open source file");
  }
}

/** Reads `file` to its end in chunks (the buffer is reused once `each` returns or settles: it must not keep it); returns the byte count. */
async function readChunks(store: Store, file: File, check: () => void, each: (chunk: Uint8Array) => void | Promise<void>): Promise<number> {
  const buf = new Uint8Array(BLOB_COPY_CHUNK_SIZE);
  let position = 0;
  let sinceYield = 0;
  for (;;) {
    let n: number;
    try {
      n = file.read(buf, position);
    } catch (e) {
      throw storageError(e, store.path, file.path, "putBlob: read source file", position);
    }
    if (n === 0) return position;
    check();
    const pending = each(buf.subarray(0, n));
    if (pending !== undefined) await pending;
    position += n;
    sinceYield += n;
    if (sinceYield >= BLOB_YIELD_BYTES) {
      sinceYield = 0;
      await yieldToEventLoop();
    }
  }
}

/**
 * Background fdatasyncs of a file being written front to back, one every
 * BLOB_SYNC_BEHIND_BYTES (see there), one at a time: putBlob's temp file
 * and a client's blob download. A failure goes to `onError`; the promise
 * from `settled` never rejects.
 *
 * @example
 * const writeback = new WritebackPacer(file, (e) => (failure ??= e));
 * const written = file.writeAsync(chunk, at); writeback.wrote(at);
 * await written; await writeback.settled();
 */
export class WritebackPacer {
  #dueAt = BLOB_SYNC_BEHIND_BYTES;
  #syncing: Promise<void> | undefined;

  constructor(private readonly file: File, private readonly onError: (e: unknown) => void) {}

  /** A write at `at` has started: when one is due, a sync starts of what was written before it (a write may still run beside it: the File contract allows one). */
  wrote(at: number): void {
    if (at < this.#dueAt || this.#syncing !== undefined) return;
    this.#dueAt = at + BLOB_SYNC_BEHIND_BYTES;
    this.#syncing = this.file.datasyncAsync().then(undefined, this.onError).finally(() => {
      this.#syncing = undefined;
    });
  }

  /** Resolves once no background fdatasync is running. */
  settled(): Promise<void> {
    return this.#syncing ?? Promise.resolve();
  }
}

/**
 * Writes a blob's temp file and hashes it: chunks at the running offset
 * with `File.writeAsync`, each given to the hasher while the kernel
 * copies it, and the hasher told once it is written (its thread
 * reads pieces from the file: ParallelBlake3's backing). A chunk of at
 * least BLOB_WRITE_BUFFER_SIZE is written as it is and awaited before
 * push returns (its owner may reuse it then); smaller ones are gathered
 * into one of two buffers, and a full buffer is written while the other
 * fills. At most one write is in flight (the File contract). `finish`
 * digests, fdatasyncs and closes; `abort` closes and unlinks.
 */
class BlobTempWriter {
  private readonly file: File;
  /** The blob's hasher, backed by the temp file. */
  private readonly hasher: ParallelBlake3;
  /** Bytes handed to writes so far, the one in flight included. */
  private offset = 0;
  /** The buffer being filled, and the other one (possibly being written). */
  private buffer: Uint8Array | undefined;
  private spare: Uint8Array | undefined;
  private fill = 0;
  /** The write in flight; it never rejects (a failure is kept in `failure`, so no rejection goes unhandled). */
  private inFlight: Promise<void> | undefined;
  /** The background fdatasyncs (a failure is kept in `failure` too). */
  private readonly writeback: WritebackPacer;
  private failure: unknown;
  private done = false;

  constructor(private readonly store: Store, readonly path: string) {
    try {
      this.file = store.fs.open(path, "wx+");
    } catch (e) {
      throw storageError(e, store.path, path, "putBlob: create temp file");
    }
    this.writeback = new WritebackPacer(this.file, (e) => {
      this.failure ??= storageError(e, store.path, path, "putBlob: background fdatasync");
    });
    this.hasher = ParallelBlake3.create({ backing: this.file });
  }

  /** Writes and hashes `chunk` after everything before it (the hash runs while the write does). */
  async push(chunk: Uint8Array): Promise<void> {
    assert(!this.done, "push after finish or abort");
    if (this.offset + this.fill + chunk.length > BLOB_LENGTH_MAX) {
      throw new RangeError(`putBlob: blob ${this.path} would pass ${BLOB_LENGTH_MAX} bytes`);
    }
    if (this.fill === 0 && chunk.length >= BLOB_WRITE_BUFFER_SIZE) {
      await this.settle();
      this.start(chunk);
      try {
        this.hasher.update(chunk);
      } finally {
        await this.settle(); // the chunk is its owner's again only once written
      }
      return;
    }
    this.hasher.update(chunk);
    let at = 0;
    while (at < chunk.length) {
      this.buffer ??= new Uint8Array(BLOB_WRITE_BUFFER_SIZE);
      const n = Math.min(BLOB_WRITE_BUFFER_SIZE - this.fill, chunk.length - at);
      this.buffer.set(chunk.subarray(at, at + n), this.fill);
      this.fill += n;
      at += n;
      if (this.fill === BLOB_WRITE_BUFFER_SIZE) await this.flush();
    }
  }

  /** Starts writing the filled part of the buffer, and takes the other buffer to fill. */
  private async flush(): Promise<void> {
    if (this.fill === 0) return;
    await this.settle(); // the spare may be the one in flight
    const full = this.buffer!;
    const bytes = full.subarray(0, this.fill);
    this.fill = 0;
    this.buffer = this.spare;
    this.spare = full;
    this.start(bytes);
  }

  private start(bytes: Uint8Array): void {
    assert(this.inFlight === undefined, "one write in flight at a time");
    const at = this.offset;
    this.offset += bytes.length;
    this.inFlight = this.file.writeAsync(bytes, at).then(undefined, (e) => {
      this.failure ??= storageError(e, this.store.path, this.path, "putBlob: write", at);
    });
    this.writeback.wrote(at);
  }

  /** Waits for the write in flight and tells the hasher; throws its failure, or an earlier one. */
  private async settle(): Promise<void> {
    const pending = this.inFlight;
    if (pending !== undefined) {
      await pending;
      this.inFlight = undefined;
    }
    if (this.failure !== undefined) throw this.failure;
    this.hasher.written(this.offset);
  }

  /**
   * Writes what is gathered, digests, fdatasyncs and closes: the length and
   * the BLAKE3. The hash thread's last pieces are hashed while this thread
   * waits in fdatasync, and the file is closed only after the digest (the
   * thread reads it).
   */
  async finish(): Promise<{ length: number; hash: Uint8Array }> {
    await this.flush();
    await this.settle();
    const digest = this.hasher.digest();
    digest.catch(() => {}); // awaited below; a failure of the fdatasync first must not leave it unhandled
    await this.writeback.settled();
    if (this.failure !== undefined) throw this.failure;
    try {
      this.file.datasync();
    } catch (e) {
      throw storageError(e, this.store.path, this.path, "putBlob: fdatasync");
    }
    assert(this.file.size() === this.offset, `temp file ${this.path} holds what was written`);
    const hash = await digest;
    this.done = true;
    this.file.close();
    return { length: this.offset, hash };
  }

  /** Stops the hasher, then closes and removes the temp file (after any failure), once no write is in flight. */
  async abort(): Promise<void> {
    this.done = true;
    this.hasher.release();
    await this.inFlight;
    this.inFlight = undefined;
    await this.writeback.settled();
    this.file.close();
    unlinkQuiet(this.store.fs, this.path);
  }

  /** Gives the hasher back (after finish or abort; safe twice). */
  release(): void {
    this.hasher.release();
  }
}

// ---------------------------------------------------------------------------
// openBlob and blobPath

/**
 * A stream of the blob stored under `id`, or undefined when `id` holds no
 * blob. See the top of this file for verification. The store wrapper has
 * checked that the store is open and `id` is 32 bytes.
 *
 * @example
 * const stream = openBlob(store, id);
 * for await (const chunk of stream!) sink.write(chunk);
 */
export function openBlob(store: Store, id: Uint8Array, options: OpenBlobOptions = {}): ReadableStream<Uint8Array> | undefined {
  for (const k of Object.keys(options)) {
    if (!OPEN_BLOB_OPTION_NAMES.includes(k)) throw new TypeError(`openBlob: unknown option "${k}" (known: ${OPEN_BLOB_OPTION_NAMES.join(", ")})`);
  }
  if (options.verify !== undefined && typeof options.verify !== "boolean") throw new TypeError(`openBlob: option verify must be a boolean`);
  const verify = options.verify ?? true;
  const record = store.blobRecord(id);
  if (record === undefined) return undefined;
  const hex = idHex(id);
  const path = blobFilesByStore.get(store)?.currentPath(hex, record) ?? store.paths.blob(hex, record.serial);
  const place = { store: store.path, file: path };
  let file: File;
  try {
    file = store.fs.open(path, "r");
  } catch (e) {
    if (isFsError(e, "ENOENT")) {
      throw new IntegrityError(`blob ${hex} of store ${store.path}: its file ${path} is missing (run check)`, place);
    }
    throw storageError(e, store.path, path, "openBlob: open");
  }
  const length = record.length;
  if (length > BigInt(BLOB_LENGTH_MAX)) {
    file.close();
    throw new IntegrityError(`blob ${hex}: its record says ${length} bytes, more than this build reads`, { ...place, segment: record.segment, offset: record.offset });
  }
  const total = Number(length);
  let size: number;
  try {
    size = file.size();
  } catch (e) {
    file.close();
    throw storageError(e, store.path, path, "openBlob: size");
  }
  if (size !== total) {
    file.close();
    throw new IntegrityError(`blob file ${path} holds ${size} bytes; its record (segment ${record.segment}, offset ${record.offset}) says ${total}`, place);
  }
  return openBlobStream(store, file, path, total, verify ? record.hash : undefined);
}

function openBlobStream(store: Store, file: File, path: string, total: number, hash: Uint8Array | undefined): ReadableStream<Uint8Array> {
  let hasher: ParallelBlake3 | undefined;
  let position = 0;
  let closed = false;
  const closeFile = (): void => {
    if (closed) return;
    closed = true;
    // The hasher first: its thread may be reading the file.
    hasher?.release();
    file.close();
  };
  // A byte stream: a BYOB reader's buffer is filled in place (no allocation per chunk); a default reader gets
  // buffers of BLOB_READ_CHUNK_SIZE allocated by the stream (autoAllocateChunkSize), so byobRequest is always set.
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: BLOB_READ_CHUNK_SIZE,
    start() {
      // Backed by the blob file itself: the hash thread reads its pieces there rather than being handed copies.
      if (hash !== undefined) hasher = ParallelBlake3.create({ backing: file });
    },
    async pull(controller) {
      const request = controller.byobRequest!;
      assert(request !== null && request.view !== null, "byte stream pull has a BYOB request");
      try {
        const view = new Uint8Array(request.view.buffer, request.view.byteOffset, request.view.byteLength);
        const want = Math.min(view.length, total - position);
        let n = 0;
        if (want > 0) {
          try {
            n = file.read(view.subarray(0, want), position);
          } catch (e) {
            throw storageError(e, store.path, path, "openBlob: read", position);
          }
          if (n !== want) {
            throw new IntegrityError(`blob file ${path} ends at offset ${position + n}, before the ${total} bytes its record says`, {
              store: store.path, file: path, offset: position + n,
            });
          }
          hasher?.update(view.subarray(0, n));
          position += n;
          hasher?.written(position);
        }
        if (position < total) {
          request.respond(n);
          return;
        }
        // The end: verify before the last bytes go out, so a reader never sees a complete stream of bad bytes.
        if (hasher !== undefined && !bytesEqual(await hasher.digest(), hash!)) {
          throw new IntegrityError(`blob file ${path} does not match its BLAKE3 hash (${total} bytes read): the file is damaged`, {
            store: store.path, file: path,
          });
        }
        closeFile();
        if (n > 0) {
          request.respond(n);
          controller.close();
        } else {
          controller.close();
          request.respond(0); // hands a BYOB reader its buffer back with done: true
        }
      } catch (e) {
        closeFile();
        controller.error(e);
      }
    },
    cancel() {
      closeFile();
    },
  });
}

/**
 * The path of the file holding the blob stored under `id` (read-your-writes:
 * for a blob put in the open transaction, its temp file, renamed at commit),
 * or undefined when `id` holds no blob.
 *
 * @example
 * blobPath(store, id) // "data/blobs/3f/3f…e1.12"
 */
export function blobPath(store: Store, id: Uint8Array): string | undefined {
  const record = store.blobRecord(id);
  if (record === undefined) return undefined;
  const hex = idHex(id);
  return blobFilesByStore.get(store)?.currentPath(hex, record) ?? store.paths.blob(hex, record.serial);
}

// ---------------------------------------------------------------------------
// The orphan sweep

/** What a sweep removed. */
export interface SweepResult {
  temps: number;
  orphans: number;
}

/**
 * Removes temp files and blob files no committed BLOB record names, under
 * blobs/<xx>/. Run by the store at open, after recovery, when writable.
 * A blob whose record is damaged is left alone (check decides); removal
 * failures are ignored (the next open tries again).
 *
 * @example
 * sweepBlobFiles(store) // { temps: 1, orphans: 0 }
 */
export function sweepBlobFiles(store: Store): SweepResult {
  const fs = store.fs;
  const result: SweepResult = { temps: 0, orphans: 0 };
  const blobs = store.paths.blobs;
  try {
    const st = fs.stat(blobs);
    if (st === undefined || !st.isDirectory) return result;
    for (const dirName of fs.readdir(blobs)) {
      if (!/^[0-9a-f]{2}$/.test(dirName)) continue;
      const dir = `${blobs}/${dirName}`;
      const dirStat = fs.stat(dir);
      if (dirStat === undefined || !dirStat.isDirectory) continue;
      for (const name of fs.readdir(dir)) {
        const parsed = parseBlobName(name);
        if (parsed === undefined || parsed.idHex.slice(0, 2) !== dirName) continue;
        if (parsed.kind === "temp") {
          if (unlinkQuiet(fs, `${dir}/${name}`)) result.temps++;
          continue;
        }
        let record: BlobRecordInfo | undefined;
        try {
          record = store.blobRecord(idFromHex(parsed.idHex));
        } catch (e) {
          if (e instanceof IntegrityError) continue;
          throw e;
        }
        if (record === undefined || record.serial !== parsed.serial) {
          if (unlinkQuiet(fs, `${dir}/${name}`)) result.orphans++;
        }
      }
    }
  } catch (e) {
    throw storageError(e, store.path, blobs, "open: sweep blob files");
  }
  return result;
}

// ---------------------------------------------------------------------------
// Helpers

/** Unlinks `path`, ignoring any failure (a leftover is swept at the next open); true when it was removed. */
function unlinkQuiet(fs: FileSystem, path: string): boolean {
  try {
    fs.unlink(path);
    return true;
  } catch (e) {
    if (!(e instanceof FsError)) throw e;
    return false;
  }
}

/** Lower-case hex of an id (as store.ts's idHex; repeated here so blobs.ts imports only types from store.ts). */
function idHex(id: Uint8Array): string {
  let s = "";
  for (let i = 0; i < id.length; i++) s += (id[i] < 16 ? "0" : "") + id[i].toString(16);
  return s;
}

function idFromHex(hex: string): Uint8Array {
  assert(hex.length === KEY_SIZE * 2, `id hex of ${hex.length} chars`);
  const id = new Uint8Array(KEY_SIZE);
  for (let i = 0; i < KEY_SIZE; i++) id[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return id;
}

function randomNonce(): string {
  const b = crypto.getRandomValues(new Uint8Array(BLOB_NONCE_BYTES));
  return idHex(b);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A macrotask turn (timers exist in both runtimes), so sockets and timers run during a long copy. */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

if (BLOB_HASH_SIZE !== 32) throw new Error("blobs: BLAKE3-256 digests are 32 bytes");
