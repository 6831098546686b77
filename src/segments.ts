/**
 * Segment files: the append-only log. Three parts:
 *
 * - `SegmentFiles`: a bounded LRU of open read handles, and the list of
 *   segments that exist on disk.
 * - `SegmentScanner`: walks the records of one segment in order, validating
 *   each (bounds before trust, then CRC) and saying where and why it stopped.
 * - `SegmentWriter`: assembles records in the wasm write buffer, checksums
 *   them where they lie, writes them to the head segment, rolls to a new
 *   segment at max_segment_size, and makes a commit durable.
 *
 * The record layout and validity rules are in `format.ts`.
 */
import type { File, FileSystem } from "./fs.ts";
import { FsError, isFsError } from "./fs.ts";
import {
  assert, COMMIT_RECORD_SIZE, DELETE_RECORD_SIZE, IntegrityError, KEY_SIZE, MAX_RECORD_SIZE, PUT_HEADER_SIZE,
  RECORD_HEADER_SIZE, RECORD_SIZE_MAX, RECORD_SIZE_MIN, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC, StorageError,
  TAG_BLOB, TAG_COMMIT, TAG_DELETE, TAG_PUT,
} from "./format.ts";
import { BlockCache } from "./blockcache.ts";
import type { StorePaths } from "./paths.ts";
import type { WasmCore } from "./wasm.ts";

/** Read handles kept open at once; older ones are closed (least recently used first). */
export const MAX_OPEN_SEGMENTS = 64;
/** Bytes a scanner reads per call: large enough to amortise the syscall, small enough to stay cache-friendly. */
export const SCAN_CHUNK_SIZE = 1024 * 1024;

/** Wraps an OS error met while working on `file` as a StorageError naming the store, file and offset. */
export function storageError(e: unknown, store: string, file: string, what: string, offset?: number): Error {
  if (e instanceof FsError) {
    const at = offset === undefined ? "" : ` at offset ${offset}`;
    return new StorageError(e.code, `${what} failed for ${file}${at} in store ${store}: ${e.code} (${e.message})`, {
      store, file, offset, cause: e,
    });
  }
  return e as Error;
}

/** The open read handles of a store's segments, bounded, least recently used closed first. */
export class SegmentFiles {
  private readonly open = new Map<number, File>();
  /** The last segment asked for: a run of reads in one segment skips the LRU bookkeeping. */
  private lastSegment = -1;
  private lastFile: File | undefined;
  /** Committed bytes of recently read blocks (blockcache.ts); capacity 0 when the owner reads uncached. */
  readonly cache: BlockCache;
  constructor(
    private readonly fs: FileSystem,
    private readonly paths: StorePaths,
    private readonly storeName: string,
    readCacheBytes = 0,
  ) {
    this.cache = new BlockCache(readCacheBytes);
  }

  /** The read handle of `segment`; IntegrityError if the file is missing (a segment the index needs is gone). */
  get(segment: number): File {
    if (segment === this.lastSegment) return this.lastFile!;
    let file = this.open.get(segment);
    if (file !== undefined) {
      // Re-insert to mark as most recently used (Map keeps insertion order).
      this.open.delete(segment);
      this.open.set(segment, file);
      this.lastSegment = segment;
      this.lastFile = file;
      return file;
    }
    const path = this.paths.segment(segment);
    // Close the least recently used handle before opening, not after: never more than MAX_OPEN_SEGMENTS at once.
    if (this.open.size >= MAX_OPEN_SEGMENTS) this.closeHandle(this.open.keys().next().value as number);
    try {
      file = this.fs.open(path, "r");
    } catch (e) {
      if (isFsError(e, "ENOENT")) {
        throw new IntegrityError(`segment ${segment} is missing: ${path} does not exist in store ${this.storeName}`, {
          store: this.storeName, file: path, segment,
        });
      }
      throw storageError(e, this.storeName, path, "open");
    }
    this.open.set(segment, file);
    this.lastSegment = segment;
    this.lastFile = file;
    return file;
  }

  /**
   * Copies a record's bytes into `dest` from the block cache when it can
   * (see BlockCache.read: `limit` is where the segment's committed bytes
   * end); false when the caller must read the file.
   */
  readCached(segment: number, offset: number, size: number, limit: number, dest: Uint8Array, destAt: number): boolean {
    if (this.cache.capacity === 0) return false;
    return this.cache.read(this.get(segment), segment, offset, size, limit, dest, destAt);
  }

  /** Closes the handle of a segment about to be truncated or deleted, and forgets its cached blocks. */
  evict(segment: number): void {
    this.cache.dropSegment(segment);
    this.closeHandle(segment);
  }

  /** Closes a segment's read handle (the LRU's eviction; the cached blocks stay valid). */
  private closeHandle(segment: number): void {
    if (segment === this.lastSegment) {
      this.lastSegment = -1;
      this.lastFile = undefined;
    }
    const file = this.open.get(segment);
    if (file !== undefined) {
      file.close();
      this.open.delete(segment);
    }
  }

  closeAll(): void {
    this.cache.clear();
    this.lastSegment = -1;
    this.lastFile = undefined;
    for (const file of this.open.values()) file.close();
    this.open.clear();
  }
}

/** Lists the segments on disk, ascending. Names that are not segment numbers in their proper directory are ignored. */
export function listSegments(fs: FileSystem, paths: StorePaths): number[] {
  const segments: number[] = [];
  let dirs: string[];
  try {
    dirs = fs.readdir(paths.data);
  } catch (e) {
    if (isFsError(e, "ENOENT")) return segments;
    throw e;
  }
  for (const dir of dirs) {
    if (!/^\d{1,10}$/.test(dir)) continue;
    const dirNumber = Number(dir);
    for (const name of fs.readdir(`${paths.data}/${dir}`)) {
      if (!/^\d{1,10}$/.test(name)) continue;
      const segment = Number(name);
      if (Math.floor(segment / paths.segmentsPerDir) !== dirNumber) continue;
      segments.push(segment);
    }
  }
  return segments.sort((a, b) => a - b);
}

/** Why a scan stopped. */
export type ScanEnd =
  /** the file ends exactly after a record */
  | "eof"
  /** fewer than 8 bytes, or a wrong magic */
  | "bad-magic"
  /** a header or body cut short by the end of the file */
  | "truncated"
  /** a size out of bounds for its tag, or an unknown tag */
  | "bad-header"
  /** a record whose CRC does not match */
  | "bad-crc";

/** One record as a scanner sees it; `bytes` is a view valid until the next call to `next()`. */
export interface ScannedRecord {
  tag: number;
  offset: number;
  size: number;
  /** The whole record (header included), a view into the scanner's buffer. */
  bytes: Uint8Array;
}

/**
 * Walks a segment's records in order. Every record returned has passed the
 * validity rules of format.ts; the first that does not stops the scan, and
 * `end` / `endOffset` say why and where.
 *
 * @example
 * const scan = new SegmentScanner(file, fileSize, core);
 * for (let r = scan.next(); r; r = scan.next()) console.log(r.tag, r.offset);
 * if (scan.end !== "eof") console.log("stopped at", scan.endOffset, scan.end);
 */
export class SegmentScanner {
  end: ScanEnd | undefined;
  /** Offset of the first byte not returned as part of a valid record. */
  endOffset: number;
  private buf: Uint8Array;
  private bufStart = 0; // file offset of buf[0]
  private bufLen = 0;
  private dv: DataView;
  constructor(
    private readonly file: File,
    private readonly fileSize: number,
    private readonly crc: (bytes: Uint8Array, seed?: number) => number,
    startOffset = SEGMENT_HEADER_SIZE,
  ) {
    this.buf = new Uint8Array(Math.max(SCAN_CHUNK_SIZE, 2 * RECORD_HEADER_SIZE));
    this.dv = new DataView(this.buf.buffer);
    this.endOffset = startOffset;
    if (startOffset === SEGMENT_HEADER_SIZE) {
      const magic = new Uint8Array(SEGMENT_HEADER_SIZE);
      const n = fileSize >= SEGMENT_HEADER_SIZE ? file.read(magic, 0) : 0;
      if (n < SEGMENT_HEADER_SIZE || !magic.every((b, i) => b === SEGMENT_MAGIC[i])) {
        this.end = "bad-magic";
        this.endOffset = 0;
      }
    }
  }

  /** Makes [offset, offset+len) present in buf; returns its start in buf, or -1 past the end of file. */
  private window(offset: number, len: number): number {
    if (offset + len > this.fileSize) return -1;
    if (offset >= this.bufStart && offset + len <= this.bufStart + this.bufLen) return offset - this.bufStart;
    if (len > this.buf.length) {
      this.buf = new Uint8Array(Math.max(len, this.buf.length * 2));
      this.dv = new DataView(this.buf.buffer);
    }
    const want = Math.min(this.buf.length, this.fileSize - offset);
    const got = this.file.read(this.buf.subarray(0, want), offset);
    this.bufStart = offset;
    this.bufLen = got;
    return got >= len ? 0 : -1;
  }

  /** The next valid record, or undefined at the end (see `end`). */
  next(): ScannedRecord | undefined {
    if (this.end !== undefined) return undefined;
    const offset = this.endOffset;
    if (offset === this.fileSize) {
      this.end = "eof";
      return undefined;
    }
    let at = this.window(offset, RECORD_HEADER_SIZE);
    if (at < 0) {
      this.end = "truncated";
      return undefined;
    }
    const crc = this.dv.getUint32(at, true);
    const size = this.dv.getUint32(at + 4, true);
    const tag = this.buf[at + 8];
    // Bounds before trust: never read or allocate from a size that is out of range for its tag.
    if (tag > TAG_BLOB || size < RECORD_SIZE_MIN[tag] || size > RECORD_SIZE_MAX[tag]) {
      this.end = "bad-header";
      return undefined;
    }
    at = this.window(offset, size);
    if (at < 0) {
      this.end = "truncated";
      return undefined;
    }
    const bytes = this.buf.subarray(at, at + size);
    if (this.crc(bytes.subarray(4)) !== crc) {
      this.end = "bad-crc";
      return undefined;
    }
    this.endOffset = offset + size;
    return { tag, offset, size, bytes };
  }
}

/** Reads the u64 transaction id of a COMMIT record. */
export function commitTxid(record: Uint8Array): bigint {
  assert(record.length === COMMIT_RECORD_SIZE, "commit record size");
  return new DataView(record.buffer, record.byteOffset, record.byteLength).getBigUint64(RECORD_HEADER_SIZE, true);
}

/** Reads the killed-segment field of a DELETE record. */
export function deleteKilledSegment(record: Uint8Array): number {
  assert(record.length === DELETE_RECORD_SIZE, "delete record size");
  return new DataView(record.buffer, record.byteOffset, record.byteLength).getUint32(PUT_HEADER_SIZE, true);
}

/** Where a record was appended. */
export interface RecordPlace {
  segment: number;
  offset: number;
}

/**
 * Appends records to the head segment. Records are assembled in the wasm
 * write buffer and checksummed there; the buffer goes to the file when it
 * fills, when a read needs bytes not yet written, and at commit.
 *
 * Positions: `committedSize` is the head's size after its last durable
 * COMMIT (or its initial size); `fileSize` is what has been written to the
 * file; `end` adds what is still in the buffer.
 *
 * Durability (strict POSIX): a segment left behind by a roll is datasynced
 * and its directory entry synced before the next one is created, so a torn
 * record can only ever be in the last segment; a commit datasyncs the head
 * and syncs the directory entries it created.
 */
export class SegmentWriter {
  segment: number;
  private file: File;
  private fileSize: number;
  private bufLen = 0;
  committedSegment: number;
  committedSize: number;
  /** Segments created since the last commit, whose files rollback removes. */
  private readonly createdSinceCommit: number[] = [];
  /** Directories whose entries must be synced before the next commit returns. */
  private readonly dirsToSync = new Set<string>();
  /** Set after a failed write or sync: the file's tail is unknown, so nothing more is written. */
  failed: Error | undefined;
  /** True when the failure was a sync: after a failed fsync the kernel may have dropped dirty pages, so only a reopen is safe. */
  syncFailed = false;
  /** Bytes appended over the writer's life (records of every kind), to bound the log written between checkpoints. */
  bytesAppended = 0;

  constructor(
    private readonly fs: FileSystem,
    private readonly paths: StorePaths,
    private readonly core: WasmCore,
    private readonly storeName: string,
    private readonly maxSegmentSize: number,
    head: { segment: number; file: File; size: number },
    /** Called when a new segment is created (so the store can track it). */
    private readonly onNewSegment: (segment: number) => void,
  ) {
    this.segment = head.segment;
    this.file = head.file;
    this.fileSize = head.size;
    this.committedSegment = head.segment;
    this.committedSize = head.size;
  }

  /** Log position after the last record appended. */
  get end(): number {
    return this.fileSize + this.bufLen;
  }

  /** True when anything was appended since the last commit. */
  get dirty(): boolean {
    return this.segment !== this.committedSegment || this.end !== this.committedSize;
  }

  /** Creates segment `segment` (and its data/<n> directory) with its magic; returns the open file. */
  static createSegmentFile(fs: FileSystem, paths: StorePaths, segment: number, dirsToSync: Set<string>): File {
    const dir = paths.segmentDir(segment);
    if (fs.stat(dir) === undefined) {
      fs.mkdir(dir);
      dirsToSync.add(paths.data);
    }
    const path = paths.segment(segment);
    const file = fs.open(path, "wx+");
    file.write(SEGMENT_MAGIC, 0);
    dirsToSync.add(dir);
    return file;
  }

  /**
   * Room for a record of `size` bytes in the write buffer; returns its
   * pointer in wasm memory and the place it will have on disk. Rolls to a
   * new segment first when the record would pass max_segment_size.
   */
  reserve(size: number): { ptr: number; place: RecordPlace } {
    this.assertWritable();
    if (!(size >= RECORD_HEADER_SIZE && size <= MAX_RECORD_SIZE)) assert(false, `record size ${size}`);
    if (this.end + size > this.maxSegmentSize && this.end > SEGMENT_HEADER_SIZE) this.roll();
    if (this.bufLen + size > this.core.writeBufSize) this.flush();
    const ptr = this.core.writeBufPtr + this.bufLen;
    const place = { segment: this.segment, offset: this.end };
    this.bufLen += size;
    this.bytesAppended += size;
    return { ptr, place };
  }

  /** Fills in size and tag at `ptr`, then the CRC over bytes [4, size). The body must be in place already. */
  seal(ptr: number, size: number, tag: number): void {
    const dv = this.core.dv;
    dv.setUint32(ptr + 4, size, true);
    this.core.u8[ptr + 8] = tag;
    dv.setUint32(ptr, this.core.crc32At(ptr + 4, size - 4), true);
  }

  /** Appends a PUT of `value` under `key`. */
  appendPut(key: Uint8Array, value: Uint8Array): RecordPlace {
    const size = PUT_HEADER_SIZE + value.length;
    const { ptr, place } = this.reserve(size);
    const u8 = this.core.u8;
    u8.set(key, ptr + RECORD_HEADER_SIZE);
    u8.set(value, ptr + PUT_HEADER_SIZE);
    this.seal(ptr, size, TAG_PUT);
    return place;
  }

  /** Appends a DELETE of `key`, recording the segment of the PUT it kills. */
  appendDelete(key: Uint8Array, killedSegment: number): RecordPlace {
    const { ptr, place } = this.reserve(DELETE_RECORD_SIZE);
    this.core.u8.set(key, ptr + RECORD_HEADER_SIZE);
    this.core.dv.setUint32(ptr + PUT_HEADER_SIZE, killedSegment, true);
    this.seal(ptr, DELETE_RECORD_SIZE, TAG_DELETE);
    return place;
  }

  /** Appends an already valid record (compaction copies records as they are: the CRC does not cover the position). */
  appendRaw(record: Uint8Array): RecordPlace {
    const { ptr, place } = this.reserve(record.length);
    this.core.u8.set(record, ptr);
    return place;
  }

  /** Appends a record whose body a callback writes at `ptr + 9` (BLOB records). */
  appendWith(size: number, tag: number, writeBody: (u8: Uint8Array, dv: DataView, bodyPtr: number) => void): RecordPlace {
    const { ptr, place } = this.reserve(size);
    writeBody(this.core.u8, this.core.dv, ptr + RECORD_HEADER_SIZE);
    this.seal(ptr, size, tag);
    return place;
  }

  /** Writes the buffered records to the head file (no sync). */
  flush(): void {
    if (this.bufLen === 0) return;
    this.assertWritable();
    const bytes = this.core.u8.subarray(this.core.writeBufPtr, this.core.writeBufPtr + this.bufLen);
    try {
      this.file.write(bytes, this.fileSize);
    } catch (e) {
      this.failed = storageError(e, this.storeName, this.paths.segment(this.segment), "write", this.fileSize);
      throw this.failed;
    }
    this.fileSize += this.bufLen;
    this.bufLen = 0;
  }

  /** Makes sure a read of [offset, offset+size) in `segment` finds the bytes in the file. */
  ensureReadable(segment: number, offset: number, size: number): void {
    if (segment === this.segment && offset + size > this.fileSize) this.flush();
  }

  /** Closes the head and starts segment + 1: the old one is made durable first (see the class comment). */
  private roll(): void {
    this.flush();
    this.syncHead("datasync before roll");
    this.syncDirs();
    const next = this.segment + 1;
    let file: File;
    try {
      file = SegmentWriter.createSegmentFile(this.fs, this.paths, next, this.dirsToSync);
    } catch (e) {
      this.failed = storageError(e, this.storeName, this.paths.segment(next), "create segment");
      throw this.failed;
    }
    this.file.close();
    this.createdSinceCommit.push(next);
    this.segment = next;
    this.file = file;
    this.fileSize = SEGMENT_HEADER_SIZE;
    this.onNewSegment(next);
  }

  private syncHead(what: string): void {
    try {
      this.file.datasync();
    } catch (e) {
      this.syncFailed = true;
      this.failed = storageError(e, this.storeName, this.paths.segment(this.segment), what);
      throw this.failed;
    }
  }

  private syncDirs(): void {
    for (const dir of [...this.dirsToSync].sort((a, b) => a.length - b.length)) {
      try {
        this.fs.syncDir(dir);
      } catch (e) {
        this.syncFailed = true;
        this.failed = storageError(e, this.storeName, dir, "directory sync");
        throw this.failed;
      }
      this.dirsToSync.delete(dir);
    }
  }

  /** Appends COMMIT(txid), writes, datasyncs, syncs new directory entries. The transaction is durable when it returns. */
  commit(txid: bigint): RecordPlace {
    const { ptr, place } = this.reserve(COMMIT_RECORD_SIZE);
    this.core.dv.setBigUint64(ptr + RECORD_HEADER_SIZE, txid, true);
    this.seal(ptr, COMMIT_RECORD_SIZE, TAG_COMMIT);
    this.flush();
    this.syncHead("datasync at commit");
    this.syncDirs();
    this.committedSegment = this.segment;
    this.committedSize = this.fileSize;
    this.createdSinceCommit.length = 0;
    return place;
  }

  /**
   * Discards everything appended since the last commit, on disk too: the
   * head is truncated back and segments created since are deleted. After a
   * failed write this is how the writer becomes usable again.
   */
  rollback(): number[] {
    assert(!this.syncFailed, "rollback after a failed sync: the store must be reopened");
    this.bufLen = 0;
    const removed = [...this.createdSinceCommit];
    try {
      if (this.segment !== this.committedSegment) {
        this.file.close();
        this.file = this.fs.open(this.paths.segment(this.committedSegment), "r+");
      }
      const dirs = new Set<string>();
      for (const segment of removed) {
        try {
          this.fs.unlink(this.paths.segment(segment));
        } catch (e) {
          if (!isFsError(e, "ENOENT")) throw e;
        }
        dirs.add(this.paths.segmentDir(segment));
      }
      // The unlinks must be durable before the head is truncated and written again: a roll synced the removed
      // segments' names, and if one survived a crash behind a head whose new tail is torn, the torn record would
      // no longer be in the last segment, which open rightly refuses (tests/90.crash, rollback across a roll).
      for (const dir of [...dirs].sort((a, b) => b.length - a.length)) this.fs.syncDir(dir);
      this.file.truncate(this.committedSize);
    } catch (e) {
      this.failed = storageError(e, this.storeName, this.paths.segment(this.committedSegment), "rollback truncate", this.committedSize);
      throw this.failed;
    }
    this.createdSinceCommit.length = 0;
    this.segment = this.committedSegment;
    this.fileSize = this.committedSize;
    this.failed = undefined;
    return removed;
  }

  private assertWritable(): void {
    if (this.failed !== undefined) throw this.failed;
  }

  close(): void {
    this.file.close();
  }
}

/** Asserts a key is a 32-byte Uint8Array (TypeError otherwise): the check every public call makes first. */
export function checkKey(key: unknown, what = "id"): asserts key is Uint8Array {
  if (!(key instanceof Uint8Array) || key.length !== KEY_SIZE) {
    const got = key instanceof Uint8Array ? `${key.length} bytes` : typeof key;
    throw new TypeError(`${what} must be a Uint8Array of ${KEY_SIZE} bytes, got ${got}`);
  }
}
