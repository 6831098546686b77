/**
 * Store: a transactional, log-structured key/value store in a directory.
 *
 * Map: options · states and invariants · open (create, lock, checkpoint,
 * replay, truncate tail) · reads · writes · commit / rollback · checkpoints
 * · compaction · stats · close.
 *
 * ## States
 *
 * ```
 *   open() ──► OPEN ◄──────── commit() / rollback() ───┐
 *               │  put/delete/putBlob                  │
 *               └───────────────► IN TRANSACTION ──────┘
 *   a failed fdatasync or directory sync ──► FAILED (reads only; reopen to recover)
 *   close() from any state ──► CLOSED (every call throws StateError ECLOSED; close() again is a no-op)
 * ```
 * A failed write (ENOSPC, EIO on write) during a transaction or commit rolls
 * the transaction back, on disk too, and the store stays OPEN: the error
 * says so. A failed sync cannot be rolled back with confidence (the kernel
 * may have dropped the dirty pages), so the store goes FAILED.
 *
 * ## Invariants
 * 1. The index maps each live key to its newest PUT or BLOB record:
 *    committed records, plus the open transaction's own (read-your-writes).
 *    The undo log holds what the open transaction replaced.
 * 2. Every record on disk up to the writer's committed position is durable
 *    and valid; the checkpoint (index.N + hints.N) equals the index after
 *    the COMMIT record that ends at its position.
 * 3. An overwrite writes DELETE(killed = old segment) before the new PUT, so
 *    every dead PUT has a DELETE naming its segment. A DELETE is kept while
 *    the segment it names exists; replay applies DELETE(k, s) only when the
 *    index holds k in segment s. Together: compaction can drop any dead PUT
 *    and no deleted key comes back on replay.
 * 4. Compaction only touches segments older than the checkpoint's segment,
 *    so replay after the checkpoint always finds the records it needs; it
 *    deletes a segment only after the commit holding the copies is durable,
 *    one unlink and directory sync at a time, oldest first.
 *
 * ## Recovery at open (each row is exercised by tests/40.store and 90.crash)
 *
 * | found on disk                                   | open does                                            |
 * |-------------------------------------------------|------------------------------------------------------|
 * | no index.N / hints.N, or both unusable          | replays every segment from the first                  |
 * | checkpoint whose position is not a COMMIT of    | ignores it, tries the next older, else full replay    |
 * |   its txid (renamed, stale, or hints disagree)  |                                                      |
 * | records after the last valid COMMIT             | truncates them (the transaction never committed)      |
 * | segments after the one with the last COMMIT    | deletes them                                          |
 * | torn or corrupt record in the last segment      | treated as the uncommitted tail (above)               |
 * | corrupt record in an earlier segment            | IntegrityError naming segment and offset (run check)  |
 * | leftover *.tmp files                            | deletes them                                          |
 * | hints naming segments compaction deleted since  | replays with their stats, then forgets them           |
 * | README, lock, empty data/ but no config         | not a store yet; create: true finishes the create     |
 * | no segment at all                               | creates segment 0                                     |
 */
import type { File, FileSystem } from "./fs.ts";
import { isFsError } from "./fs.ts";
import {
  assert, BLOB_RECORD_SIZE, COMMIT_RECORD_SIZE, DEFAULT_MAX_SEGMENT_SIZE, DEFAULT_SEGMENTS_PER_DIR,
  DELETE_RECORD_SIZE, INDEX_BLOB_FLAG, INDEX_SIZE_MASK, IntegrityError, KEY_SIZE, MAX_OBJECT_SIZE,
  MAX_SEGMENT_SIZE_LIMIT, MIN_SEGMENT_SIZE_LIMIT, NotFoundError, PUT_HEADER_SIZE, RECORD_HEADER_SIZE,
  SEGMENT_HEADER_SIZE, STORE_README, STORE_VERSION, StateError, StorageError, StoreFormatError, TAG_BLOB,
  TAG_COMMIT, TAG_DELETE, TAG_PUT,
} from "./format.ts";
import { type StoreConfig, formatConfig, parseConfig } from "./config.ts";
import { decodeHints, encodeHints, type Hints, type SegmentStat } from "./hints.ts";
import { KeyIndex, type CheckpointMeta } from "./keyindex.ts";
import { dirnameOf, joinPath, parseCheckpointName, StorePaths, STORE_FILES, TEMP_SUFFIX } from "./paths.ts";
import {
  checkKey, commitTxid, deleteKilledSegment, listSegments, SegmentFiles, SegmentScanner, SegmentWriter, storageError,
} from "./segments.ts";
import { acquireStoreLock, type LockOwner } from "./storelock.ts";
import {
  blobFilesOf, blobPath, openBlob, putBlob, sweepBlobFiles, type BlobInfo, type BlobSource, type OpenBlobOptions,
} from "./blobs.ts";
import type { CheckOptions, CheckReport } from "./check.ts";
import { UndoLog } from "./undolog.ts";
import { ValueSlab } from "./valueslab.ts";
import { READ_CACHE_BYTES_DEFAULT, READ_CACHE_BYTES_MAX } from "./blockcache.ts";
import { crc32, WasmCore } from "./wasm.ts";

// ---------------------------------------------------------------------------
// Limits and defaults

/** Compaction rewrites a segment when its live bytes (PUT, BLOB and DELETE records) fall under this share of it. */
export const DEFAULT_COMPACT_RATIO = 0.5;
/** A checkpoint is written once the log since the last one passes this many bytes... */
export const CHECKPOINT_LOG_BYTES_MIN = 64 * 1024 * 1024;
/**
 * ...or this many times the last checkpoint's size, whichever is larger: checkpoint I/O stays under a third of
 * log I/O, and replay at open stays under twice the index's size.
 */
export const CHECKPOINT_LOG_RATIO = 2;
/** Most bytes one commit copies for automatic compaction, so no commit is held up for long. */
export const AUTO_COMPACT_BYTES_MAX = 8 * 1024 * 1024;
/** Least bytes one commit may copy for automatic compaction (when the commit itself wrote less). */
export const AUTO_COMPACT_BYTES_MIN = 256 * 1024;
/** Bytes one step of an explicit compact() copies before committing them. */
export const COMPACT_STEP_BYTES = 64 * 1024 * 1024;
/** getMany reads adjacent records with one read up to this many bytes. */
export const GET_MANY_COALESCE_MAX = 1024 * 1024;

/**
 * Options of `open()`. Every field is optional.
 *
 * @example
 * const store = open("./data", { create: true, lockTimeout: 1000 });
 */
export interface OpenOptions {
  /** Create the store if the path does not exist or is an empty directory. Default false. */
  create?: boolean;
  /** The filesystem adapter; default: the runtime's (adapters/runtime.ts). */
  fs?: FileSystem;
  /** Open for reading only, with a shared lock (many readers, no writer). Default false. */
  readOnly?: boolean;
  /** Wait up to this many milliseconds for the lock instead of failing at once with LockedError. Default 0. */
  lockTimeout?: number;
  /** At create only: segment size before rolling to a new one. Default 64 MiB. */
  maxSegmentSize?: number;
  /** At create only: segments per data/<n> directory. Default 10000. */
  segmentsPerDir?: number;
  /** Compact a segment when its live share falls under this (0..1). Default 0.5. */
  compactRatio?: number;
  /** Let commit() spend a bounded amount of work compacting sparse segments. Default true. */
  autoCompact?: boolean;
  /** Log bytes between automatic checkpoints, at least; default CHECKPOINT_LOG_BYTES_MIN (tests set it low). */
  checkpointBytes?: number;
  /**
   * Memory for committed segment blocks that gets read again (blockcache.ts),
   * taken as it fills. Default READ_CACHE_BYTES_DEFAULT (32 MiB); 0 reads
   * every record from its file.
   */
  readCacheBytes?: number;
}

const OPTION_NAMES = [
  "create", "fs", "readOnly", "lockTimeout", "maxSegmentSize", "segmentsPerDir", "compactRatio", "autoCompact",
  "checkpointBytes", "readCacheBytes",
];

/** What stats() reports. Sizes are bytes. */
export interface StoreStats {
  path: string;
  id: string;
  readOnly: boolean;
  /** Live keys, blobs included. */
  keys: number;
  blobs: number;
  segments: number;
  /** Bytes of live records (headers included). */
  liveBytes: number;
  /** Bytes of all segment files. */
  totalBytes: number;
  lastTxid: bigint;
  /** Wasm memory the key index occupies, and per key. */
  indexBytes: number;
  indexBytesPerKey: number;
  /** Bytes of log an open would replay now (written since the last checkpoint). */
  replayBytes: number;
  checkpoint: CheckpointMeta | null;
  /** Segments waiting for compaction. */
  compactCandidates: number[];
  /** True while a transaction has uncommitted writes. */
  inTransaction: boolean;
}

/** What compact() did. */
export interface CompactResult {
  segmentsCompacted: number;
  bytesCopied: number;
  bytesFreed: number;
}

/** Options of compact(). */
export interface CompactOptions {
  /**
   * Called after each committed step (at most COMPACT_STEP_BYTES copied)
   * with the bytes copied so far and the live bytes of the segments chosen
   * at the start, which bounds what can be copied.
   */
  onProgress?: (bytesCopied: number, bytesToCopy: number) => void;
}

/** Work another module (blobs) hangs on the transaction lifecycle. */
export interface TransactionHooks {
  /** Before the COMMIT record is written: make files durable under their final names. May throw to abort the commit. */
  beforeCommit(txid: bigint): void;
  /** After the COMMIT is durable: remove what the transaction made obsolete. Must not throw. */
  afterCommit(txid: bigint): void;
  /** After a rollback: remove what the transaction had prepared. Must not throw. */
  afterRollback(): void;
  /** True while the hook holds uncommitted work (so commit() has something to commit). */
  pending(): boolean;
}

type State = "open" | "failed" | "closed";

/** A BLOB record's metadata, as blobs.ts needs it. */
export interface BlobRecordInfo {
  length: bigint;
  hash: Uint8Array;
  serial: bigint;
  segment: number;
  offset: number;
}

function processOwner(fsName: string): LockOwner {
  // `process` is a global in Node and in Deno 2; the engine asks nothing else of the runtime here.
  const g = globalThis as { process?: { pid?: number } };
  return { pid: g.process?.pid ?? 0, host: "localhost", runtime: fsName };
}

function randomHex(bytes: number): string {
  const b = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Lower-case hex of an id, for messages and names. */
export function idHex(id: Uint8Array): string {
  let s = "";
  for (let i = 0; i < id.length; i++) s += (id[i] < 16 ? "0" : "") + id[i].toString(16);
  return s;
}

/**
 * An open store. Synchronous: a get is one index lookup in wasm and one
 * pread; a commit is one COMMIT record and one fdatasync.
 *
 * @example
 * const store = Store.open("./data", { create: true, fs });
 * store.put(id, new TextEncoder().encode("hello"));
 * const txid = store.commit();
 * store.get(id); // Uint8Array "hello"
 * store.close();
 */
export class Store {
  readonly path: string;
  readonly readOnly: boolean;
  readonly config: StoreConfig;
  /** @internal */ readonly fs: FileSystem;
  /** @internal */ readonly paths: StorePaths;
  private state: State = "open";
  private failure: Error | undefined;
  private readonly core: WasmCore;
  /** Set by openLoadCheckpoint: loaded from a checkpoint, or empty for a full replay. One per core. */
  private index!: KeyIndex;
  /** Where get() and getMany() copy values out of wasm memory (see valueslab.ts for why a slab). */
  private readonly values = new ValueSlab();
  private readonly files: SegmentFiles;
  private writer: SegmentWriter | undefined;
  private lockFile: File | undefined;
  private readonly segStats = new Map<number, SegmentStat>();
  private readonly statsUndo = new Map<number, SegmentStat | null>();
  private readonly undo = new UndoLog();
  private lastTxid = 0n;
  private checkpointMeta: CheckpointMeta | undefined;
  private appendedAtCheckpoint = 0;
  /** Bytes of the last index.N written or loaded: the automatic checkpoint bound grows with it. */
  private lastCheckpointSize = 0;
  /** Log bytes found after the checkpoint at open (replayed), added to what was appended since. */
  private replayedAtOpen = 0;
  private readonly compactCandidates = new Set<number>();
  private readonly pendingSegmentDeletes: number[] = [];
  private compactCursor: { segment: number; offset: number } | undefined;
  private readonly compactRatio: number;
  private readonly autoCompact: boolean;
  private readonly checkpointBytes: number;
  private readonly hooks: TransactionHooks[] = [];
  /** writer.bytesAppended when the open transaction began: what it wrote paces automatic compaction. */
  private appendedAtTxnStart = 0;

  /**
   * Opens (or with `create`, creates) the store at `path`. Takes the
   * exclusive lock (shared with `readOnly`); fails fast with LockedError
   * unless `lockTimeout` is given. Recovers to the last commit (see the
   * recovery table at the top of store.ts).
   *
   * @example
   * const store = Store.open("./data", { create: true, fs: nodeFs });
   */
  static open(path: string, options: OpenOptions & { fs: FileSystem }): Store {
    return new Store(path, options);
  }

  private constructor(path: string, options: OpenOptions & { fs: FileSystem }) {
    // Validate options up front, by name, so a typo is an error rather than a silent default.
    if (typeof path !== "string" || path === "") throw new TypeError(`open: path must be a non-empty string, got ${String(path)}`);
    for (const name of Object.keys(options)) {
      if (!OPTION_NAMES.includes(name)) throw new TypeError(`open: unknown option "${name}" (known: ${OPTION_NAMES.join(", ")})`);
    }
    const num = (name: keyof OpenOptions, min: number, max: number, def: number): number => {
      const v = options[name];
      if (v === undefined) return def;
      if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) {
        throw new RangeError(`open: option ${name} must be a number in [${min}, ${max}], got ${String(v)}`);
      }
      return v;
    };
    const lockTimeout = num("lockTimeout", 0, 2 ** 31, 0);
    this.compactRatio = num("compactRatio", 0, 1, DEFAULT_COMPACT_RATIO);
    this.checkpointBytes = num("checkpointBytes", 0, 2 ** 52, CHECKPOINT_LOG_BYTES_MIN);
    this.autoCompact = options.autoCompact ?? true;
    this.readOnly = options.readOnly ?? false;
    if (options.create && this.readOnly) throw new TypeError("open: create and readOnly cannot be used together");
    this.fs = options.fs;
    this.path = path;

    if (options.create) {
      Store.openCreate(this.fs, path, {
        maxSegmentSize: num("maxSegmentSize", MIN_SEGMENT_SIZE_LIMIT, MAX_SEGMENT_SIZE_LIMIT, DEFAULT_MAX_SEGMENT_SIZE),
        segmentsPerDir: num("segmentsPerDir", 1, 2 ** 31, DEFAULT_SEGMENTS_PER_DIR),
      });
    }
    this.config = Store.openReadConfig(this.fs, path);
    this.paths = new StorePaths(path, this.config.segmentsPerDir);
    this.lockFile = acquireStoreLock(
      this.fs, this.paths.lock, this.readOnly ? "shared" : "exclusive", lockTimeout, path, processOwner(this.fs.name),
    );
    this.core = WasmCore.create();
    this.files = new SegmentFiles(
      this.fs, this.paths, path, num("readCacheBytes", 0, READ_CACHE_BYTES_MAX, READ_CACHE_BYTES_DEFAULT),
    );
    try {
      this.openRecover();
      if (!this.readOnly) sweepBlobFiles(this); // blobs.ts: temp files and blob files no committed record names
    } catch (e) {
      this.files.closeAll();
      this.lockFile.close();
      this.state = "closed";
      throw e;
    }
  }

  // -------------------------------------------------------------------------
  // open: create, config, recovery

  /** Creates the store directory: README, config, lock, data/ and segment 0, each durable before open goes on. */
  private static openCreate(fs: FileSystem, path: string, opts: { maxSegmentSize: number; segmentsPerDir: number }): void {
    const st = fs.stat(path);
    if (st !== undefined) {
      if (!st.isDirectory) throw new StoreFormatError(`cannot create store at ${path}: it exists and is not a directory`, { store: path });
      const names = fs.readdir(path);
      if (names.length > 0) {
        // An existing store with create: true just opens, as lmdb and Deno KV do.
        if (names.includes(STORE_FILES.config)) return;
        if (!Store.openCreateInterrupted(fs, path, names)) {
          throw new StoreFormatError(`cannot create store at ${path}: the directory is not empty and holds no store`, { store: path });
        }
        // A create that a crash cut short before its config was durable: create over what it left.
      }
    } else {
      try {
        Store.openCreateParents(fs, path);
      } catch (e) {
        throw storageError(e, path, path, "create store directory");
      }
    }
    const paths = new StorePaths(path, opts.segmentsPerDir);
    const writeFile = (file: string, text: string) => {
      const tmp = paths.temp(file);
      const f = fs.open(tmp, "w+");
      try {
        f.write(new TextEncoder().encode(text), 0);
        f.sync();
      } finally {
        f.close();
      }
      fs.rename(tmp, file);
    };
    try {
      writeFile(paths.readme, STORE_README);
      fs.open(paths.lock, "w+").close();
      if (fs.stat(paths.data) === undefined) fs.mkdir(paths.data);
      const config: StoreConfig = {
        version: STORE_VERSION, segmentsPerDir: opts.segmentsPerDir, maxSegmentSize: opts.maxSegmentSize, id: randomHex(32),
      };
      // config last: a directory with a config is a store, so a crash before this leaves no half store.
      fs.syncDir(path);
      writeFile(paths.config, formatConfig(config));
      fs.syncDir(path);
    } catch (e) {
      throw storageError(e, path, path, "create store");
    }
  }

  /**
   * True when `names` are only what openCreate writes before the config (README, lock, an empty data/, temp
   * files): a create interrupted by a crash, which a new create may finish (tests/90.crash walks every such point).
   */
  private static openCreateInterrupted(fs: FileSystem, path: string, names: string[]): boolean {
    const leftovers = new Set<string>([
      STORE_FILES.readme, STORE_FILES.lock, STORE_FILES.data, STORE_FILES.readme + TEMP_SUFFIX, STORE_FILES.config + TEMP_SUFFIX,
    ]);
    if (!names.every((n) => leftovers.has(n))) return false;
    if (!names.includes(STORE_FILES.data)) return true;
    const data = joinPath(path, STORE_FILES.data);
    return fs.stat(data)?.isDirectory === true && fs.readdir(data).length === 0;
  }

  /**
   * mkdir -p for the store directory, as lmdb-js does: each directory made
   * is followed by a sync of its parent, so the store's own name is durable.
   */
  private static openCreateParents(fs: FileSystem, path: string): void {
    const parent = dirnameOf(path);
    if (parent !== path && fs.stat(parent) === undefined) Store.openCreateParents(fs, parent);
    fs.mkdir(path);
    fs.syncDir(parent);
  }

  private static openReadConfig(fs: FileSystem, path: string): StoreConfig {
    const st = fs.stat(path);
    if (st === undefined) throw new NotFoundError(`cannot open store ${path}: no such directory (pass { create: true } to make one)`, { store: path });
    if (!st.isDirectory) throw new StoreFormatError(`cannot open store ${path}: it is a file, not a store directory`, { store: path });
    const configPath = joinPath(path, STORE_FILES.config);
    let file: File;
    try {
      file = fs.open(configPath, "r");
    } catch (e) {
      if (isFsError(e, "ENOENT")) {
        throw new StoreFormatError(`cannot open ${path}: it is not a segstore store (no config file)`, { store: path, file: configPath });
      }
      throw storageError(e, path, configPath, "open config");
    }
    try {
      const size = Math.min(file.size(), 64 * 1024);
      const buf = new Uint8Array(size);
      const n = file.read(buf, 0);
      return parseConfig(new TextDecoder().decode(buf.subarray(0, n)), configPath);
    } catch (e) {
      if (e instanceof StoreFormatError) {
        throw new StoreFormatError(`${e.message} (store ${path})`, { store: path, file: configPath });
      }
      throw e;
    } finally {
      file.close();
    }
  }

  /** open → openRemoveTemp → openLoadCheckpoint → openReplay → openTruncateTail → openHead. */
  private openRecover(): void {
    if (!this.readOnly) this.openRemoveTemp();
    let segments = listSegments(this.fs, this.paths);
    const checkpoint = this.openLoadCheckpoint(segments);
    const fromSegment = checkpoint?.segment ?? -1;
    const replay = segments.filter((s) => s >= fromSegment);
    const lastCommit = this.openReplay(replay, checkpoint, segments[segments.length - 1]);
    this.openDropDeletedStats(segments);
    if (!this.readOnly) {
      segments = this.openTruncateTail(segments, lastCommit);
      this.openHead(segments, lastCommit);
    }
    this.files.closeAll();
  }

  /** Leftover temp files (a crash mid-checkpoint or mid-create) hold nothing committed. */
  private openRemoveTemp(): void {
    for (const name of this.fs.readdir(this.path)) {
      if (name.endsWith(TEMP_SUFFIX)) this.fs.unlink(joinPath(this.path, name));
    }
  }

  /** The newest checkpoint whose index, hints and log position agree; loads it into the index. */
  private openLoadCheckpoint(segments: number[]): CheckpointMeta | undefined {
    const names = this.fs.readdir(this.path);
    const candidates = names.map((n) => parseCheckpointName(n, "index")).filter((n): n is number => n !== undefined);
    candidates.sort((a, b) => b - a);
    const existing = new Set(segments);
    let vouched: CheckpointMeta | undefined;
    for (const n of candidates) {
      let file: File | undefined;
      try {
        file = this.fs.open(this.paths.index(n), "r");
        // Check the cheap things first; load the table (which claims the core) only for a checkpoint that fits.
        const meta = KeyIndex.readCheckpointMeta(file, this.core);
        const hints = this.openReadHints(n);
        if (meta.segment !== n || hints.segment !== n || hints.offset !== meta.offset || hints.txid !== meta.txid) continue;
        if (!existing.has(n) || !this.openIsCommitAt(n, meta.offset, meta.txid)) {
          // A checkpoint is written only once its commit is durable, and the log is never cut below it: the log lost
          // committed bytes. A replay without it would cut the damage off as an uncommitted tail and show older versions.
          vouched = meta;
          break;
        }
        // size() before the load: once the table is loaded (the core claimed), nothing may fail over to the next candidate.
        const checkpointSize = file.size();
        this.index = KeyIndex.loadCheckpoint(this.core, file).index;
        this.lastCheckpointSize = checkpointSize;
        // Stats of every segment, even ones compaction deleted after this checkpoint: the index still points into
        // them until replay moves those keys, and replay's decrements need the counts (openDropDeletedStats).
        for (const [s, stat] of hints.segments) this.segStats.set(s, stat);
        for (const s of hints.compact) if (existing.has(s)) this.compactCandidates.add(s);
        this.lastTxid = meta.txid;
        this.checkpointMeta = meta;
        return meta;
      } catch (e) {
        // An unusable checkpoint is not an error: the log has everything. Try the next older one.
        if (!(e instanceof IntegrityError) && !isFsError(e)) throw e;
      } finally {
        file?.close();
      }
    }
    if (vouched !== undefined) {
      const { segment, offset, txid } = vouched;
      throw new IntegrityError(
        `store ${this.path}: checkpoint ${this.paths.index(segment)} vouches for transaction ${txid} ending at segment ${segment} offset ${offset}, ` +
          `but the log has no such COMMIT there (the segment is damaged, cut short or missing); ` +
          `run "segstore check --repair ${this.path}" to salvage`,
        { store: this.path, file: this.paths.segment(segment), segment, offset },
      );
    }
    this.index = new KeyIndex(this.core);
    return undefined;
  }

  private openReadHints(n: number): Hints {
    const path = this.paths.hints(n);
    const file = this.fs.open(path, "r");
    try {
      const size = file.size();
      if (size > 64 * 1024 * 1024) throw new IntegrityError(`hints file ${path} is ${size} bytes, too large`, { file: path });
      const buf = new Uint8Array(size);
      if (file.read(buf, 0) !== size) throw new IntegrityError(`hints file ${path} changed while read`, { file: path });
      return decodeHints(buf, path);
    } finally {
      file.close();
    }
  }

  /** True when the bytes just before `offset` in `segment` are a valid COMMIT of `txid`. */
  private openIsCommitAt(segment: number, offset: number, txid: bigint): boolean {
    if (txid === 0n) return offset === SEGMENT_HEADER_SIZE;
    if (offset < SEGMENT_HEADER_SIZE + COMMIT_RECORD_SIZE) return false;
    const file = this.files.get(segment);
    if (file.size() < offset) return false;
    const rec = new Uint8Array(COMMIT_RECORD_SIZE);
    if (file.read(rec, offset - COMMIT_RECORD_SIZE) !== COMMIT_RECORD_SIZE) return false;
    const dv = new DataView(rec.buffer);
    if (dv.getUint32(4, true) !== COMMIT_RECORD_SIZE || rec[8] !== TAG_COMMIT) return false;
    if (this.core.crc32Of(rec.subarray(4)) !== dv.getUint32(0, true)) return false;
    return commitTxid(rec) === txid;
  }

  /**
   * Replays segments after the checkpoint: applies each transaction at its
   * COMMIT and returns the position after the last valid COMMIT. What
   * follows it is the uncommitted tail, undone in memory here.
   */
  private openReplay(
    segments: number[], checkpoint: CheckpointMeta | undefined, lastSegment: number | undefined,
  ): { segment: number; offset: number } | undefined {
    let lastCommit = checkpoint ? { segment: checkpoint.segment, offset: checkpoint.offset } : undefined;
    let replayed = 0;
    const fileSizes = new Map<number, number>();
    for (const segment of segments) {
      const file = this.files.get(segment);
      const size = file.size();
      const start = checkpoint && segment === checkpoint.segment ? checkpoint.offset : SEGMENT_HEADER_SIZE;
      const scan = new SegmentScanner(file, size, (bytes, seed) => this.core.crc32Of(bytes, seed), start);
      if (!this.segStats.has(segment) || start === SEGMENT_HEADER_SIZE) {
        this.segStats.set(segment, { count: 0, bytes: 0, deleteBytes: 0, size });
      }
      for (let r = scan.next(); r !== undefined; r = scan.next()) {
        const key = r.bytes.subarray(RECORD_HEADER_SIZE, RECORD_HEADER_SIZE + KEY_SIZE);
        switch (r.tag) {
          case TAG_PUT:
            this.applyPut(key, segment, r.offset, r.size);
            break;
          case TAG_BLOB:
            this.applyPut(key, segment, r.offset, r.size | INDEX_BLOB_FLAG);
            break;
          case TAG_DELETE:
            this.applyDelete(key, deleteKilledSegment(r.bytes), segment, true);
            break;
          case TAG_COMMIT: {
            const txid = commitTxid(r.bytes);
            if (txid <= this.lastTxid) {
              throw new IntegrityError(
                `store ${this.path}: COMMIT in segment ${segment} at offset ${r.offset} has transaction id ${txid}, not after ${this.lastTxid}`,
                { store: this.path, file: this.paths.segment(segment), segment, offset: r.offset },
              );
            }
            this.lastTxid = txid;
            this.undo.clear();
            this.statsUndo.clear();
            lastCommit = { segment, offset: r.offset + r.size };
            break;
          }
        }
      }
      replayed += scan.endOffset - start;
      this.segStats.get(segment)!.size = size;
      fileSizes.set(segment, size);
      if (scan.end !== "eof" && segment !== lastSegment) {
        // A roll syncs the old segment before the next exists, so only the last segment can hold a torn write.
        throw new IntegrityError(
          `store ${this.path}: segment ${segment} has a ${scan.end} record at offset ${scan.endOffset}, before later segments; ` +
            `run "segstore check --repair ${this.path}" to salvage`,
          { store: this.path, file: this.paths.segment(segment), segment, offset: scan.endOffset },
        );
      }
    }
    this.rollbackMemory();
    // Undoing the tail's records also undid the sizes set above: a segment's size is its file's (a writable open
    // then cuts the tail and sets the cut size; a read-only one leaves the files as they are, and check compares
    // its stats with them: tests/91.torture's read-only checker after a kill -9 found the last segment short).
    for (const [segment, size] of fileSizes) {
      const stat = this.segStats.get(segment);
      if (stat !== undefined) stat.size = size;
    }
    this.replayedAtOpen = replayed;
    return lastCommit;
  }

  /**
   * Forgets the stats of segments that are gone (compaction deleted them after the checkpoint was written and
   * replay moved their keys away). One the index still points into keeps its stats, so counts stay consistent
   * and a get of such a key reports the missing segment (IntegrityError) instead of corrupting the counts.
   */
  private openDropDeletedStats(segments: number[]): void {
    const existing = new Set(segments);
    for (const [s, stat] of [...this.segStats]) if (!existing.has(s) && stat.count === 0) this.segStats.delete(s);
  }

  /** Cuts the uncommitted tail: truncates after the last COMMIT, deletes later segments (newest first). */
  private openTruncateTail(segments: number[], lastCommit: { segment: number; offset: number } | undefined): number[] {
    const keep = lastCommit?.segment ?? -1;
    const dirs = new Set<string>();
    for (const segment of [...segments].reverse()) {
      if (segment <= keep) break;
      this.files.evict(segment);
      this.fs.unlink(this.paths.segment(segment));
      this.segStats.delete(segment);
      this.compactCandidates.delete(segment);
      dirs.add(this.paths.segmentDir(segment));
    }
    for (const dir of dirs) this.fs.syncDir(dir);
    if (lastCommit !== undefined) {
      const path = this.paths.segment(lastCommit.segment);
      const file = this.fs.open(path, "r+");
      try {
        if (file.size() > lastCommit.offset) {
          this.files.evict(lastCommit.segment);
          file.truncate(lastCommit.offset);
          file.datasync();
          this.segStats.get(lastCommit.segment)!.size = lastCommit.offset;
        }
      } finally {
        file.close();
      }
    }
    return segments.filter((s) => s <= keep);
  }

  /** Opens the head for appending after the last commit; creates segment 0 in an empty store. */
  private openHead(segments: number[], lastCommit: { segment: number; offset: number } | undefined): void {
    let head: { segment: number; file: File; size: number };
    if (lastCommit === undefined) {
      // Nothing committed: segments (if any) were deleted above; start the log afresh.
      const dirs = new Set<string>();
      const file = SegmentWriter.createSegmentFile(this.fs, this.paths, 0, dirs);
      file.datasync();
      for (const dir of [...dirs].sort((a, b) => a.length - b.length)) this.fs.syncDir(dir);
      head = { segment: 0, file, size: SEGMENT_HEADER_SIZE };
      this.segStats.set(0, { count: 0, bytes: 0, deleteBytes: 0, size: SEGMENT_HEADER_SIZE });
    } else {
      assert(segments.includes(lastCommit.segment), "head segment exists");
      const file = this.fs.open(this.paths.segment(lastCommit.segment), "r+");
      head = { segment: lastCommit.segment, file, size: lastCommit.offset };
    }
    this.writer = new SegmentWriter(
      this.fs, this.paths, this.core, this.path, this.config.maxSegmentSize, head,
      (segment) => this.statFor(segment),
    );
    this.appendedAtCheckpoint = 0;
  }

  // -------------------------------------------------------------------------
  // Index and stats bookkeeping, shared by writes, replay and compaction

  private statFor(segment: number): SegmentStat {
    let stat = this.segStats.get(segment);
    if (!this.statsUndo.has(segment)) this.statsUndo.set(segment, stat === undefined ? null : { ...stat });
    if (stat === undefined) {
      stat = { count: 0, bytes: 0, deleteBytes: 0, size: SEGMENT_HEADER_SIZE };
      this.segStats.set(segment, stat);
    }
    return stat;
  }

  private statDecrement(segment: number, size: number): void {
    const stat = this.statFor(segment);
    stat.count--;
    stat.bytes -= size & INDEX_SIZE_MASK;
    if (!(stat.count >= 0 && stat.bytes >= 0)) assert(false, `live count of segment ${segment} went negative`);
    if (this.isSparse(segment, stat)) this.compactCandidates.add(segment);
  }

  private isSparse(segment: number, stat: SegmentStat): boolean {
    if (this.writer !== undefined && segment === this.writer.segment) return false;
    const used = stat.size - SEGMENT_HEADER_SIZE;
    return used > 0 && stat.bytes + stat.deleteBytes < this.compactRatio * used;
  }

  /** Points `key` at a new PUT or BLOB record; `size` carries INDEX_BLOB_FLAG for blobs. */
  private applyPut(key: Uint8Array, segment: number, offset: number, size: number): void {
    // `x | INDEX_BLOB_FLAG` is a negative int32 in JS: make it the u32 the index stores.
    const replaced = this.index.set(key, segment, offset, size >>> 0);
    if (replaced) {
      const { oldSegment, oldOffset, oldSize } = this.index;
      this.undo.push(key, true, oldSegment, oldOffset, oldSize);
      this.statDecrement(oldSegment, oldSize);
    } else {
      this.undo.push(key, false, 0, 0, 0);
    }
    const stat = this.statFor(segment);
    stat.count++;
    stat.bytes += size & INDEX_SIZE_MASK;
    stat.size = Math.max(stat.size, offset + (size & INDEX_SIZE_MASK));
  }

  /**
   * A record now ends at `end` in `segment`. PUT and BLOB records grow the size in applyPut; a DELETE that is
   * the last record before a roll must too, or the segment's size (and hints.N) stays short of the file's,
   * since commit() only sets the head's size (check reports it as stats-mismatch; tests/90.crash found it).
   */
  private statGrow(segment: number, end: number): void {
    const stat = this.statFor(segment);
    stat.size = Math.max(stat.size, end);
  }

  /**
   * A DELETE record at `segment` for `key` that kills its PUT in `killed`.
   * On replay (`onlyIfIn`) it applies only while the index holds the key in
   * that segment (invariant 3).
   */
  private applyDelete(key: Uint8Array, killed: number, segment: number, onlyIfIn: boolean): boolean {
    const stat = this.statFor(segment);
    stat.deleteBytes += DELETE_RECORD_SIZE;
    const entry = this.index.lookup(key);
    if (entry < 0) return false;
    if (onlyIfIn && this.index.segmentAt(entry) !== killed) return false;
    const removed = this.index.remove(key);
    assert(removed, "remove of a key just looked up");
    const { oldSegment, oldOffset, oldSize } = this.index;
    this.undo.push(key, true, oldSegment, oldOffset, oldSize);
    this.statDecrement(oldSegment, oldSize);
    return true;
  }

  /** Restores the index and stats to the last commit (in memory). */
  private rollbackMemory(): void {
    this.undo.unwind((key, had, segment, offset, size) => {
      if (had) this.index.set(key, segment, offset, size);
      else this.index.remove(key);
    });
    for (const [segment, prev] of this.statsUndo) {
      if (prev === null) this.segStats.delete(segment);
      else this.segStats.set(segment, prev);
    }
    this.statsUndo.clear();
  }

  // -------------------------------------------------------------------------
  // Reads

  private checkOpen(): void {
    if (this.state === "closed") throw new StateError("ECLOSED", `store ${this.path} is closed`, { store: this.path });
  }

  private checkWritable(): SegmentWriter {
    this.checkOpen();
    if (this.readOnly) throw new StateError("EREADONLY", `store ${this.path} is open read-only`, { store: this.path });
    if (this.state === "failed") {
      throw new StateError("EFAILED", `store ${this.path} refuses writes after a failed sync (${this.failure?.message}); close and reopen it to recover to the last commit`, {
        store: this.path, cause: this.failure,
      });
    }
    return this.writer!;
  }

  /**
   * Reads the record at (segment, offset, size) into the wasm read window
   * and verifies it: size, tag, key and CRC. Returns its pointer.
   */
  private readRecord(key: Uint8Array, segment: number, offset: number, size: number): number {
    size &= INDEX_SIZE_MASK;
    assert(size <= this.core.readBufSize, "record fits the read window");
    this.writer?.ensureReadable(segment, offset, size);
    const ptr = this.core.readBufPtr;
    let n = size;
    try {
      if (!this.files.readCached(segment, offset, size, this.committedEnd(segment), this.core.u8, ptr)) {
        n = this.files.get(segment).read(this.core.u8.subarray(ptr, ptr + size), offset);
      }
    } catch (e) {
      throw storageError(e, this.path, this.paths.segment(segment), "read", offset);
    }
    this.verifyRecord(key, segment, offset, size, ptr, n);
    return ptr;
  }

  /**
   * Where `segment`'s committed bytes end: the block cache keeps nothing
   * past it, since a rollback truncates and rewrites what lies beyond. A
   * segment after the committed head holds only uncommitted records; one
   * before it is whole; a read-only store has no writer (the lock keeps
   * writers out), so every byte of its files is committed.
   */
  private committedEnd(segment: number): number {
    const writer = this.writer;
    if (writer !== undefined && segment >= writer.committedSegment) {
      return segment === writer.committedSegment ? writer.committedSize : 0;
    }
    return this.segStats.get(segment)?.size ?? 0;
  }

  private verifyRecord(key: Uint8Array, segment: number, offset: number, size: number, ptr: number, n: number): void {
    const u8 = this.core.u8;
    const dv = this.core.dv;
    // Hot path: compare first, build messages only on failure.
    let problem: string | undefined;
    if (n !== size) problem = `record cut short: read ${n} of ${size} bytes`;
    else if (dv.getUint32(ptr + 4, true) !== size) problem = `record size mismatch: header says ${dv.getUint32(ptr + 4, true)}, index ${size}`;
    else if (u8[ptr + 8] !== TAG_PUT && u8[ptr + 8] !== TAG_BLOB) problem = `record has tag ${u8[ptr + 8]}, not PUT or BLOB`;
    else if (this.core.crc32At(ptr + 4, size - 4) !== dv.getUint32(ptr, true)) problem = "checksum mismatch";
    else {
      for (let i = 0; i < KEY_SIZE; i++) {
        if (u8[ptr + RECORD_HEADER_SIZE + i] !== key[i]) {
          problem = "record holds another key";
          break;
        }
      }
    }
    if (problem !== undefined) {
      throw new IntegrityError(`${problem} in segment ${segment} at offset ${offset} of store ${this.path}`, {
        store: this.path, file: this.paths.segment(segment), segment, offset,
      });
    }
  }

  /**
   * The value stored under `id`, or undefined. Inside a transaction it sees
   * the transaction's own writes. A blob's id gives undefined (use openBlob).
   * Returns a fresh copy the caller owns.
   *
   * @example
   * const bytes = store.get(id); // Uint8Array | undefined
   */
  get(id: Uint8Array): Uint8Array | undefined {
    this.checkOpen();
    checkKey(id);
    const index = this.index;
    if (!index.find(id)) return undefined;
    const size = index.foundSize;
    if (size & INDEX_BLOB_FLAG) return undefined;
    const ptr = this.readRecord(id, index.foundSegment, index.foundOffset, size);
    return this.values.copy(this.core.u8, ptr + PUT_HEADER_SIZE, ptr + size);
  }

  /**
   * True when `id` holds a value or a blob.
   *
   * @example
   * if (!store.has(id)) store.put(id, bytes);
   */
  has(id: Uint8Array): boolean {
    this.checkOpen();
    checkKey(id);
    return this.index.lookup(id) >= 0;
  }

  /**
   * Gets many values at once, reading in segment and offset order and
   * coalescing adjacent records into one read. Results are in `ids` order.
   *
   * @example
   * const [a, b] = store.getMany([idA, idB]);
   */
  getMany(ids: Uint8Array[]): (Uint8Array | undefined)[] {
    this.checkOpen();
    const out: (Uint8Array | undefined)[] = new Array(ids.length).fill(undefined);
    const found: { i: number; segment: number; offset: number; size: number }[] = [];
    for (let i = 0; i < ids.length; i++) {
      checkKey(ids[i], `ids[${i}]`);
      const entry = this.index.lookup(ids[i]);
      if (entry < 0) continue;
      const size = this.index.sizeAt(entry);
      if (size & INDEX_BLOB_FLAG) continue;
      found.push({ i, segment: this.index.segmentAt(entry), offset: this.index.offsetAt(entry), size });
    }
    found.sort((a, b) => a.segment - b.segment || a.offset - b.offset);
    let k = 0;
    while (k < found.length) {
      // One run: records adjacent in one segment, up to the coalesce limit.
      let end = k + 1;
      let runBytes = found[k].size;
      while (
        end < found.length && found[end].segment === found[k].segment &&
        found[end].offset === found[end - 1].offset + found[end - 1].size &&
        runBytes + found[end].size <= Math.min(GET_MANY_COALESCE_MAX, this.core.readBufSize)
      ) {
        runBytes += found[end].size;
        end++;
      }
      if (end === k + 1) {
        const r = found[k];
        const ptr = this.readRecord(ids[r.i], r.segment, r.offset, r.size);
        out[r.i] = this.values.copy(this.core.u8, ptr + PUT_HEADER_SIZE, ptr + r.size);
      } else {
        const first = found[k];
        this.writer?.ensureReadable(first.segment, first.offset, runBytes);
        const file = this.files.get(first.segment);
        const base = this.core.readBufPtr;
        let n: number;
        try {
          n = file.read(this.core.u8.subarray(base, base + runBytes), first.offset);
        } catch (e) {
          throw storageError(e, this.path, file.path, "read", first.offset);
        }
        for (let j = k; j < end; j++) {
          const r = found[j];
          const ptr = base + (r.offset - first.offset);
          this.verifyRecord(ids[r.i], r.segment, r.offset, r.size, ptr, Math.max(0, Math.min(r.size, n - (r.offset - first.offset))));
          out[r.i] = this.values.copy(this.core.u8, ptr + PUT_HEADER_SIZE, ptr + r.size);
        }
      }
      k = end;
    }
    return out;
  }

  /**
   * Every live id (values and blobs), as fresh 32-byte arrays, in no
   * particular order.
   *
   * @example
   * for (const id of store.list()) console.log(idHex(id));
   */
  list(): Uint8Array[] {
    this.checkOpen();
    const ids: Uint8Array[] = new Array(this.index.count);
    for (let i = 0; i < ids.length; i++) ids[i] = this.index.keyAt(i);
    return ids;
  }

  // -------------------------------------------------------------------------
  // Writes

  /**
   * Stores `value` under `id` in the open transaction (visible to this
   * store's reads at once, durable at commit). Values up to
   * MAX_OBJECT_SIZE (16 MiB); larger ones are blobs (putBlob).
   *
   * @example
   * store.put(id, new TextEncoder().encode("hello"));
   * store.commit();
   */
  put(id: Uint8Array, value: Uint8Array): void {
    const writer = this.checkWritable();
    checkKey(id);
    if (!(value instanceof Uint8Array)) throw new TypeError(`put: value must be a Uint8Array, got ${typeof value}`);
    if (value.length > MAX_OBJECT_SIZE) {
      throw new RangeError(`put: value of ${value.length} bytes is over MAX_OBJECT_SIZE (${MAX_OBJECT_SIZE}); store it with putBlob`);
    }
    this.writeGuard(() => {
      const entry = this.index.lookup(id);
      if (entry >= 0) {
        if (this.index.sizeAt(entry) & INDEX_BLOB_FLAG) blobFilesOf(this).replacing(id); // its file goes after the commit
        // Invariant 3: the old version's segment gets a DELETE naming it.
        const killed = this.index.segmentAt(entry);
        const place = writer.appendDelete(id, killed);
        this.statFor(place.segment).deleteBytes += DELETE_RECORD_SIZE;
        this.statGrow(place.segment, place.offset + DELETE_RECORD_SIZE);
      }
      const place = writer.appendPut(id, value);
      this.applyPut(id, place.segment, place.offset, PUT_HEADER_SIZE + value.length);
    });
  }

  /**
   * Deletes `id` in the open transaction; returns whether it was there.
   *
   * @example
   * store.delete(id) // true
   */
  delete(id: Uint8Array): boolean {
    const writer = this.checkWritable();
    checkKey(id);
    const entry = this.index.lookup(id);
    if (entry < 0) return false;
    if (this.index.sizeAt(entry) & INDEX_BLOB_FLAG) blobFilesOf(this).replacing(id); // its file goes after the commit
    const killed = this.index.segmentAt(entry);
    this.writeGuard(() => {
      const place = writer.appendDelete(id, killed);
      this.applyDelete(id, killed, place.segment, false);
      this.statGrow(place.segment, place.offset + DELETE_RECORD_SIZE);
    });
    return true;
  }

  /**
   * @internal For blobs.ts: appends a BLOB record for `id` in the open
   * transaction (with the overwrite DELETE when it replaces something).
   */
  appendBlobRecord(id: Uint8Array, length: bigint, hash: Uint8Array, serial: bigint): void {
    const writer = this.checkWritable();
    checkKey(id);
    assert(hash.length === 32, "blob hash is 32 bytes");
    this.writeGuard(() => {
      const entry = this.index.lookup(id);
      if (entry >= 0) {
        const place = writer.appendDelete(id, this.index.segmentAt(entry));
        this.statFor(place.segment).deleteBytes += DELETE_RECORD_SIZE;
        this.statGrow(place.segment, place.offset + DELETE_RECORD_SIZE);
      }
      const place = writer.appendWith(BLOB_RECORD_SIZE, TAG_BLOB, (u8, dv, body) => {
        u8.set(id, body);
        dv.setBigUint64(body + KEY_SIZE, length, true);
        u8.set(hash, body + KEY_SIZE + 8);
        dv.setBigUint64(body + KEY_SIZE + 8 + 32, serial, true);
      });
      this.applyPut(id, place.segment, place.offset, BLOB_RECORD_SIZE | INDEX_BLOB_FLAG);
    });
  }

  /** @internal For blobs.ts: the BLOB record of `id`, undefined when `id` is absent or holds a plain value. */
  blobRecord(id: Uint8Array): BlobRecordInfo | undefined {
    this.checkOpen();
    checkKey(id);
    const entry = this.index.lookup(id);
    if (entry < 0) return undefined;
    const size = this.index.sizeAt(entry);
    if (!(size & INDEX_BLOB_FLAG)) return undefined;
    const segment = this.index.segmentAt(entry);
    const offset = this.index.offsetAt(entry);
    const ptr = this.readRecord(id, segment, offset, size);
    const body = ptr + PUT_HEADER_SIZE;
    return {
      length: this.core.dv.getBigUint64(body, true),
      hash: this.core.u8.slice(body + 8, body + 40),
      serial: this.core.dv.getBigUint64(body + 40, true),
      segment, offset,
    };
  }

  /** @internal For blobs.ts: the transaction id the next commit will get. */
  get nextTxid(): bigint {
    return this.lastTxid + 1n;
  }

  /** @internal For blobs.ts and net/: registers lifecycle hooks. */
  addHooks(hooks: TransactionHooks): void {
    this.hooks.push(hooks);
  }

  /** @internal For blobs.ts: whether the transaction has writes. */
  get inTransaction(): boolean {
    return (this.writer?.dirty ?? false) || this.hooks.some((h) => h.pending());
  }

  /**
   * Runs a write; if it fails (ENOSPC, EIO on write) the whole transaction
   * is rolled back, on disk too, and the error says so: a half-applied put
   * must never reach a commit.
   */
  private writeGuard(write: () => void): void {
    try {
      write();
    } catch (e) {
      if (!(e instanceof StorageError)) throw e;
      this.rollbackAfterFailure(e);
      throw e;
    }
  }

  private rollbackAfterFailure(e: StorageError): void {
    const writer = this.writer!;
    if (writer.syncFailed) {
      this.rollbackMemory();
      this.state = "failed";
      this.failure = e;
      return;
    }
    try {
      this.rollbackInternal();
      (e as { message: string }).message += "; the transaction was rolled back and the store is usable";
    } catch (again) {
      this.state = "failed";
      this.failure = again as Error;
    }
  }

  // -------------------------------------------------------------------------
  // commit and rollback

  /**
   * Makes the open transaction durable: one COMMIT record and one
   * fdatasync (plus a directory sync when a segment was created). Returns
   * its transaction id. With nothing to commit it writes nothing and
   * returns the last transaction id. May also do a bounded amount of
   * compaction, and write a checkpoint when the log since the last one has
   * grown enough.
   *
   * @example
   * store.put(id, bytes);
   * const txid = store.commit(); // 1n
   */
  commit(): bigint {
    const writer = this.checkWritable();
    if (!this.inTransaction) return this.lastTxid;
    const txid = this.lastTxid + 1n;
    try {
      if (this.autoCompact) {
        const written = writer.bytesAppended - this.appendedAtTxnStart;
        const budget = Math.min(AUTO_COMPACT_BYTES_MAX, Math.max(AUTO_COMPACT_BYTES_MIN, 2 * written));
        this.compactStep(budget);
      }
      for (const h of this.hooks) h.beforeCommit(txid);
      writer.commit(txid);
    } catch (e) {
      if (e instanceof StorageError) this.rollbackAfterFailure(e);
      else {
        try {
          this.rollbackInternal();
        } catch {
          // the first error is the one to report
        }
      }
      throw e;
    }
    this.lastTxid = txid;
    this.undo.clear();
    this.statsUndo.clear();
    this.statFor(writer.segment).size = writer.committedSize;
    this.statsUndo.clear();
    this.appendedAtTxnStart = writer.bytesAppended;
    for (const h of this.hooks) h.afterCommit(txid);
    this.commitDeleteSegments();
    if (this.replayBytes() > Math.max(this.checkpointBytes, CHECKPOINT_LOG_RATIO * this.lastCheckpointSize)) {
      try {
        this.checkpoint();
      } catch {
        // The commit is durable; a checkpoint that fails (a full disk) is retried at the next bound or at close.
      }
    }
    return txid;
  }

  /** Deletes segments emptied by compaction, now that the commit holding their copies is durable (invariant 4). */
  private commitDeleteSegments(): void {
    this.pendingSegmentDeletes.sort((a, b) => a - b);
    while (this.pendingSegmentDeletes.length > 0) {
      const segment = this.pendingSegmentDeletes[0];
      const stat = this.segStats.get(segment);
      if (!(stat === undefined || stat.count === 0)) assert(false, `compacted segment ${segment} still holds live records`);
      try {
        this.files.evict(segment);
        this.fs.unlink(this.paths.segment(segment));
        this.fs.syncDir(this.paths.segmentDir(segment));
      } catch (e) {
        if (!isFsError(e, "ENOENT")) return; // left for the next commit; nothing depends on it being gone
      }
      this.pendingSegmentDeletes.shift();
      this.segStats.delete(segment);
      this.compactCandidates.delete(segment);
    }
  }

  /**
   * Discards the open transaction: the index, the stats and the log on
   * disk return to the last commit.
   *
   * @example
   * store.put(id, bytes); store.rollback(); store.get(id) // undefined
   */
  rollback(): void {
    this.checkOpen();
    if (this.readOnly) return;
    if (this.state === "failed") {
      this.rollbackMemory();
      return;
    }
    this.rollbackInternal();
  }

  private rollbackInternal(): void {
    const writer = this.writer!;
    this.files.evict(writer.segment);
    const removed = writer.rollback();
    this.appendedAtTxnStart = writer.bytesAppended;
    for (const segment of removed) this.files.evict(segment);
    this.rollbackMemory();
    for (const s of removed) this.segStats.delete(s);
    this.pendingSegmentDeletes.length = 0;
    this.compactCursor = undefined;
    for (const h of this.hooks) h.afterRollback();
  }

  // -------------------------------------------------------------------------
  // Checkpoints

  /** Log bytes an open would replay now. */
  private replayBytes(): number {
    return this.replayedAtOpen + (this.writer?.bytesAppended ?? 0) - this.appendedAtCheckpoint;
  }

  /**
   * Writes index.N + hints.N for the last commit (temp files, datasync,
   * rename, directory sync) and then removes older checkpoints. Called at
   * close and when the log since the last checkpoint passes its bound.
   */
  checkpoint(): void {
    const writer = this.checkWritable();
    if (writer.dirty) throw new StateError("EBUSY", `store ${this.path}: checkpoint needs a committed state; commit or roll back first`, { store: this.path });
    if (this.lastTxid === 0n) return;
    const meta: CheckpointMeta = { segment: writer.committedSegment, offset: writer.committedSize, txid: this.lastTxid };
    const old = this.checkpointMeta;
    if (old && old.segment === meta.segment && old.offset === meta.offset) return;
    const indexPath = this.paths.index(meta.segment);
    const hintsPath = this.paths.hints(meta.segment);
    const write = (path: string, fill: (f: File) => void) => {
      const f = this.fs.open(path, "w+");
      try {
        fill(f);
        f.datasync();
      } finally {
        f.close();
      }
    };
    try {
      write(this.paths.temp(indexPath), (f) => {
        this.lastCheckpointSize = this.index.writeCheckpoint(f, meta);
      });
      write(this.paths.temp(hintsPath), (f) => {
        const hints: Hints = { ...meta, segments: this.segStats, compact: [...this.compactCandidates] };
        f.write(encodeHints(hints), 0);
      });
      // A checkpoint at the same segment as the last one replaces it: its index.N goes first, so a failure or a
      // crash between the two renames leaves a lone file (ignored) rather than the new hints.N beside the old
      // index.N, a pair that disagrees and that check reports (tests/92.resources: EIO on the second rename).
      try {
        this.fs.unlink(indexPath);
      } catch (e) {
        if (!isFsError(e, "ENOENT")) throw e;
      }
      this.fs.rename(this.paths.temp(hintsPath), hintsPath);
      this.fs.rename(this.paths.temp(indexPath), indexPath);
      this.fs.syncDir(this.path);
    } catch (e) {
      for (const p of [this.paths.temp(indexPath), this.paths.temp(hintsPath)]) {
        try {
          this.fs.unlink(p);
        } catch {
          // already gone
        }
      }
      throw storageError(e, this.path, indexPath, "checkpoint");
    }
    this.checkpointMeta = meta;
    this.appendedAtCheckpoint = writer.bytesAppended;
    this.replayedAtOpen = 0;
    // Older checkpoints go only now that the new one is durable.
    for (const name of this.fs.readdir(this.path)) {
      const n = parseCheckpointName(name, "index") ?? parseCheckpointName(name, "hints");
      if (n !== undefined && n !== meta.segment) {
        try {
          this.fs.unlink(joinPath(this.path, name));
        } catch {
          // a stale checkpoint left behind is ignored at open (its position is older)
        }
      }
    }
  }

  // -------------------------------------------------------------------------
  // Compaction

  /** The next segment to compact: sparse, older than the checkpoint (invariant 4), not the head. */
  private compactNext(): number | undefined {
    if (this.compactCursor !== undefined) return this.compactCursor.segment;
    const limit = this.checkpointMeta?.segment ?? -1;
    let best: number | undefined;
    for (const s of this.compactCandidates) {
      if (s >= limit || s === this.writer!.segment || this.pendingSegmentDeletes.includes(s)) continue;
      const stat = this.segStats.get(s);
      if (stat === undefined || !this.isSparse(s, stat)) {
        this.compactCandidates.delete(s);
        continue;
      }
      if (best === undefined || s < best) best = s;
    }
    return best;
  }

  /**
   * Copies live records of sparse segments into the head, at most about
   * `budget` bytes; resumes where the last step stopped. Returns bytes copied.
   */
  private compactStep(budget: number): number {
    const writer = this.writer!;
    let copied = 0;
    while (copied < budget) {
      const segment = this.compactNext();
      if (segment === undefined) break;
      const start = this.compactCursor?.segment === segment ? this.compactCursor.offset : SEGMENT_HEADER_SIZE;
      const file = this.files.get(segment);
      const scan = new SegmentScanner(file, file.size(), crc32, start);
      let r = scan.next();
      for (; r !== undefined && copied < budget; r = scan.next()) {
        const key = r.bytes.subarray(RECORD_HEADER_SIZE, RECORD_HEADER_SIZE + KEY_SIZE);
        if (r.tag === TAG_PUT || r.tag === TAG_BLOB) {
          const entry = this.index.lookup(key);
          if (entry < 0 || this.index.segmentAt(entry) !== segment || this.index.offsetAt(entry) !== r.offset) continue;
          const place = writer.appendRaw(r.bytes);
          this.applyPut(key, place.segment, place.offset, r.size | (r.tag === TAG_BLOB ? INDEX_BLOB_FLAG : 0));
          copied += r.size;
        } else if (r.tag === TAG_DELETE) {
          const killed = deleteKilledSegment(r.bytes);
          if (killed === segment || !this.segStats.has(killed) || this.pendingSegmentDeletes.includes(killed)) continue;
          const place = writer.appendRaw(r.bytes);
          this.statFor(place.segment).deleteBytes += DELETE_RECORD_SIZE;
          this.statGrow(place.segment, place.offset + DELETE_RECORD_SIZE);
          copied += r.size;
        }
      }
      if (r === undefined && scan.end === "eof") {
        this.compactCursor = undefined;
        this.compactCandidates.delete(segment);
        this.pendingSegmentDeletes.push(segment);
      } else if (r === undefined) {
        // A damaged old segment is never deleted by compaction: check --repair decides what to salvage.
        this.compactCursor = undefined;
        this.compactCandidates.delete(segment);
        break;
      } else {
        this.compactCursor = { segment, offset: r.offset };
      }
    }
    return copied;
  }

  /**
   * Compacts every sparse segment now: writes a checkpoint (so all but the
   * head are eligible), then copies live records into the head in steps,
   * committing each, and deletes the emptied segments.
   *
   * `onProgress(bytesCopied, bytesToCopy)` is called after each step, so a
   * caller can draw progress while compaction (synchronous) runs.
   *
   * @example
   * const { bytesFreed } = store.compact();
   * store.compact({ onProgress: (done, total) => console.error(`${done}/${total}`) });
   */
  compact(options: CompactOptions = {}): CompactResult {
    const writer = this.checkWritable();
    if (this.inTransaction) throw new StateError("EBUSY", `store ${this.path}: compact() needs no open transaction; commit or roll back first`, { store: this.path });
    if (this.lastTxid > 0n) this.checkpoint();
    // Re-evaluate every segment: ratios may have changed since they were last looked at.
    for (const [s, stat] of this.segStats) if (this.isSparse(s, stat)) this.compactCandidates.add(s);
    let bytesToCopy = 0;
    for (const s of this.compactCandidates) bytesToCopy += this.segStats.get(s)?.bytes ?? 0;
    const result: CompactResult = { segmentsCompacted: 0, bytesCopied: 0, bytesFreed: 0 };
    for (;;) {
      if (this.compactNext() === undefined) break;
      const sizeBefore = this.totalBytes();
      const pendingBefore = this.pendingSegmentDeletes.length;
      const copied = this.compactStep(COMPACT_STEP_BYTES);
      result.segmentsCompacted += this.pendingSegmentDeletes.length - pendingBefore;
      result.bytesCopied += copied;
      if (writer.dirty) {
        const txid = this.lastTxid + 1n;
        try {
          writer.commit(txid);
        } catch (e) {
          if (e instanceof StorageError) this.rollbackAfterFailure(e);
          throw e;
        }
        this.lastTxid = txid;
        this.undo.clear();
        this.statFor(writer.segment).size = writer.committedSize;
        this.statsUndo.clear();
      }
      this.commitDeleteSegments();
      result.bytesFreed += Math.max(0, sizeBefore - this.totalBytes());
      options.onProgress?.(result.bytesCopied, Math.max(bytesToCopy, result.bytesCopied));
      if (copied === 0 && this.pendingSegmentDeletes.length === 0 && this.compactCursor === undefined && this.compactNext() === undefined) break;
    }
    return result;
  }

  private totalBytes(): number {
    let total = 0;
    for (const s of this.segStats.values()) total += s.size;
    return total;
  }

  // -------------------------------------------------------------------------
  // Blobs: putBlob, openBlob, blobPath (implemented in src/blobs.ts)

  /**
   * Stores a blob under `id` in the open transaction: the bytes of a
   * ReadableStream or AsyncIterable of Uint8Array (written to a temp file
   * chunk by chunk as they arrive, never held whole), or of a file
   * (`{ path }` copies it; `{ path, move: true }` renames it into the store,
   * copying across filesystems). Resolves with the length, the BLAKE3-256
   * hash and the serial once the bytes are durable in the temp file and the
   * BLOB record is appended; `commit()` renames the file into place.
   *
   * Errors (no temp file is left behind, and the transaction is as before
   * unless the BLOB record's own write failed, which rolls it back like any
   * failed write): TypeError (an id that is not 32 bytes, a bad source or
   * chunk), NotFoundError (no such source file), StorageError (ENOSPC,
   * EIO...), the source's own error, StateError EBUSY (the transaction ended
   * while streaming: await putBlob before commit) or ECLOSED / EREADONLY /
   * EFAILED.
   *
   * @example
   * await store.putBlob(id, file.readable);                 // a stream
   * await store.putBlob(id2, { path: "/tmp/upload", move: true });
   * store.commit();
   */
  putBlob(id: Uint8Array, source: BlobSource): Promise<BlobInfo> {
    try {
      this.checkWritable();
      checkKey(id);
    } catch (e) {
      return Promise.reject(e);
    }
    return putBlob(this, id, source);
  }

  /**
   * A byte stream of the blob stored under `id`, or undefined when `id`
   * holds no blob (absent, or a plain value). A default reader gets 1 MiB
   * chunks; a BYOB reader (`getReader({ mode: "byob" })`) has its own
   * buffer filled in place, which keeps memory flat for any size. By
   * default the length and the BLAKE3 hash are verified before the last
   * bytes are delivered; a mismatch errors the stream with IntegrityError
   * naming the file. The file is opened now: a later delete does not
   * disturb the reader. Cancel the stream (or read it to the end) to close
   * the file.
   *
   * @example
   * for await (const chunk of store.openBlob(id)!) sink.write(chunk);
   * const reader = store.openBlob(id, { verify: false })!.getReader({ mode: "byob" });
   */
  openBlob(id: Uint8Array, options?: OpenBlobOptions): ReadableStream<Uint8Array> | undefined {
    this.checkOpen();
    checkKey(id);
    return openBlob(this, id, options);
  }

  /**
   * The path of the file holding the blob stored under `id`, or undefined
   * when `id` holds no blob. For a blob put in the open transaction it is
   * the temp file, renamed when the transaction commits. Read it, never
   * write it; it is removed once a commit replaces or deletes the blob.
   *
   * @example
   * store.blobPath(id) // "./data/blobs/3f/3fa9…e1.12"
   */
  blobPath(id: Uint8Array): string | undefined {
    this.checkOpen();
    checkKey(id);
    return blobPath(this, id);
  }

  // -------------------------------------------------------------------------
  // check and repair (implemented in src/check.ts)

  /**
   * Verifies the whole store: every record of every segment (header, size,
   * CRC, rising transaction ids), the index against a replay of the log from
   * scratch, the checkpoint files, the per-segment stats, and every blob
   * file (exists, length, BLAKE3). With `repair: true` it salvages a damaged
   * store: keeps every record it can read (resynchronising after damage),
   * rebuilds the index from the log, writes a checkpoint, and lists in
   * `lost` every id whose live version could not be saved (those ids are
   * absent afterwards). Async only to load check.ts; the pass runs without
   * yielding. Needs no open transaction (StateError EBUSY);
   * repair needs the store open for writing (StateError EREADONLY). A store
   * that no longer opens is checked and repaired by path: `checkPath` in
   * src/check.ts (`segstore check --repair`). Details: the tables atop
   * src/check.ts.
   *
   * @example
   * const report = await store.check();                 // { ok, problems, lost, repaired, records, segments, blobs }
   * if (!report.ok) await store.check({ repair: true });
   */
  async check(options: CheckOptions = {}): Promise<CheckReport> {
    // Loaded on first use: check.ts is the largest module, and most processes never check.
    const { checkStore } = await import("./check.ts");
    return await checkStore(this, options);
  }

  /**
   * @internal For check.ts: after repair rewrote the log on disk (and
   * removed the checkpoints), rebuilds the index, stats and head from it as
   * open does, then writes a checkpoint. The lock stays held throughout.
   */
  repairReload(): void {
    const writer = this.checkWritable();
    assert(!this.inTransaction, "repairReload with an open transaction");
    writer.close();
    this.writer = undefined;
    this.files.closeAll();
    this.core.tableRelease(); // openLoadCheckpoint makes a new KeyIndex in this core
    this.segStats.clear();
    this.statsUndo.clear();
    this.undo.clear();
    this.compactCandidates.clear();
    this.pendingSegmentDeletes.length = 0;
    this.compactCursor = undefined;
    this.lastTxid = 0n;
    this.checkpointMeta = undefined;
    this.appendedAtCheckpoint = 0;
    this.lastCheckpointSize = 0;
    this.replayedAtOpen = 0;
    this.appendedAtTxnStart = 0;
    try {
      this.openRecover();
    } catch (e) {
      this.state = "failed";
      this.failure = e as Error;
      throw e;
    }
    this.checkpoint();
  }

  // -------------------------------------------------------------------------
  // stats, check, close

  /**
   * Counts and sizes: keys, blobs, segments, live and total bytes, the last
   * transaction id, index memory, and how much log an open would replay.
   *
   * @example
   * const { keys, replayBytes } = store.stats();
   */
  stats(): StoreStats {
    this.checkOpen();
    let liveBytes = 0;
    for (const s of this.segStats.values()) liveBytes += s.bytes;
    let blobs = 0;
    for (let i = 0; i < this.index.count; i++) if (this.index.sizeAt(i) & INDEX_BLOB_FLAG) blobs++;
    const keys = this.index.count;
    return {
      path: this.path,
      id: this.config.id,
      readOnly: this.readOnly,
      keys,
      blobs,
      segments: this.segStats.size,
      liveBytes,
      totalBytes: this.totalBytes(),
      lastTxid: this.lastTxid,
      indexBytes: this.index.memoryBytes,
      indexBytesPerKey: keys > 0 ? this.index.memoryBytes / keys : 0,
      replayBytes: this.replayBytes(),
      checkpoint: this.checkpointMeta ?? null,
      compactCandidates: [...this.compactCandidates].sort((a, b) => a - b),
      inTransaction: this.inTransaction,
    };
  }

  /** @internal For check.ts: segments, index and reader access. */
  internals(): { index: KeyIndex; files: SegmentFiles; segments: Map<number, SegmentStat>; core: WasmCore } {
    this.checkOpen();
    return { index: this.index, files: this.files, segments: this.segStats, core: this.core };
  }

  /** True once close() ran. */
  get closed(): boolean {
    return this.state === "closed";
  }

  /**
   * Rolls back any open transaction, writes a checkpoint (so the next open
   * replays nothing), closes files and releases the lock. Idempotent.
   *
   * @example
   * store.close(); store.close(); // the second is a no-op
   */
  close(): void {
    if (this.state === "closed") return;
    let error: unknown;
    if (!this.readOnly && this.state === "open") {
      try {
        if (this.inTransaction) this.rollbackInternal();
        this.checkpoint();
      } catch (e) {
        error = e; // the log holds every commit: the next open replays it
      }
    }
    this.state = "closed";
    this.files.closeAll();
    this.writer?.close();
    if (this.lockFile !== undefined) {
      if (!this.readOnly) {
        try {
          this.lockFile.truncate(0); // no stale holder name for the next LockedError
        } catch {
          // cosmetic
        }
      }
      this.lockFile.close();
      this.lockFile = undefined;
    }
    if (error !== undefined) throw error;
  }
}
