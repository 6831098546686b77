/**
 * check and repair: verifies a store against its own log, and salvages a
 * damaged one.
 *
 * Map: limits · report types · walkSegment (records, with resynchronisation
 * after damage) · LogReplay (the log into a fresh index, by open's rules) ·
 * StoreCheck (one pass over segments, checkpoints, index, stats, blobs) ·
 * repair on disk · repair through the store · entry points: `checkStore`
 * (an open Store: `store.check()`) and `checkPath` (a path, even one whose
 * store no longer opens; what `segstore check` calls).
 *
 * ## What check verifies
 *
 * 1. Segments: the magic; every record (header bounds, size, CRC, tag), so
 *    that the log up to its last COMMIT parses; COMMIT transaction ids rise.
 *    Damage is a problem when it lies before the last valid COMMIT, or
 *    before a position a checkpoint vouches for, or anywhere in a store open
 *    for writing (its open already cut the uncommitted tail, so whatever
 *    does not parse now went bad since). Damage after the last COMMIT of a
 *    store opened read-only or not at all is the uncommitted tail that the
 *    next writable open cuts: not a problem.
 * 2. The index: a replay of the whole log from scratch into a fresh KeyIndex
 *    equals the store's index (same ids, each at the same segment, offset
 *    and size). Every entry of the replay is a record that passed its CRC
 *    and holds its key, so equality proves the same of the store's index.
 * 3. Checkpoints: every index.N + hints.N pair loads and agrees (position,
 *    txid; the position is a COMMIT of that txid). The one open would use
 *    (the newest usable), replayed forward from its position, equals the
 *    full replay; its hints equal its index's per-segment counts and bytes,
 *    the DELETE bytes and segment sizes of the log at its position.
 * 4. The open store's per-segment stats equal those of the replay.
 * 5. Blobs: the file of every live BLOB record exists, has the recorded
 *    length and the recorded BLAKE3-256.
 *
 * A lone index.N or hints.N (a checkpoint cut short by a crash) is ignored,
 * as open ignores it; so is an older pair once a newer one agrees (it is
 * only checked for damage). The newest pair whose index and hints disagree
 * is reported: damage, or a checkpoint a crash interrupted between its two
 * renames; either way repair writes a fresh one. The newest pair that
 * agrees but whose position is no COMMIT in the log proves the log lost
 * committed bytes: reported, and (for a store that does not open, which
 * open then refuses to) its index tells repair which ids those bytes held.
 *
 * ## Problem kinds
 *
 * | kind                | what                                                            | where            |
 * |---------------------|-----------------------------------------------------------------|------------------|
 * | segment-magic       | a segment does not start with DSEGMENT                           | segment, file    |
 * | segment-record      | bytes that hold no valid record (bad header, CRC, cut short)     | segment, offset  |
 * | segment-txid        | a COMMIT whose transaction id is not after the one before        | segment, offset  |
 * | index-missing       | the log has a live record the index lacks                        | id, segment      |
 * | index-extra         | the index has an id the log says is not live                     | id, segment      |
 * | index-stale         | the index points elsewhere than the id's live record             | id, segment      |
 * | checkpoint          | index.N unloadable, or disagreeing with hints.N or the log       | file, offset     |
 * | checkpoint-mismatch | index.N plus the log after it differs from the log               | file, id         |
 * | hints               | hints.N unloadable                                               | file             |
 * | hints-mismatch      | hints.N counts differ from index.N and the log                   | file, segment    |
 * | stats-mismatch      | the open store's per-segment stats differ from the log           | segment          |
 * | blob-missing        | a live blob's file does not exist                                | id, file         |
 * | blob-length         | a blob file's length differs from its BLOB record                | id, file         |
 * | blob-hash           | a blob file's BLAKE3 differs from its BLOB record                | id, file         |
 * | open                | the store did not open, and no other problem explains why        | file             |
 * | more                | problems past CHECK_PROBLEMS_MAX, counted, not listed             |                  |
 *
 * ## Repair (each row is exercised by tests/60.check)
 *
 * Repair needs the exclusive lock (a store open for writing, or a path no
 * one holds). It runs the check, and when anything is wrong it decides
 * everything it will write first (`repairPlan`), then writes it in a
 * crash-safe order (`repairDisk`), then rebuilds the index from the log:
 *
 * | found                               | repair does                                                        |
 * |-------------------------------------|--------------------------------------------------------------------|
 * | damaged region in a segment         | rewrites the segment (temp file, datasync, rename, directory sync) |
 * |                                     |   with every valid record before the damage and every one found by |
 * |                                     |   resynchronising after it; drops the damaged bytes                |
 * | bad magic                           | the same: the rewritten segment gets its magic back                |
 * | COMMIT with a txid not rising       | the same, without that COMMIT (its records join the next commit)   |
 * | records whose COMMIT a checkpoint   | kept, and committed by a COMMIT repair appends (the checkpoint     |
 * |   vouches for, though it is lost    |   proves they were); bytes cut off below its position are lost     |
 * | an uncommitted tail                 | dropped from the segment holding the last commit, as open would    |
 * | index, checkpoint, hints, stats     | every index.N / hints.N is deleted; the index and stats are rebuilt |
 * |                                     |   by replaying the repaired log (as open does)                     |
 * | blob file missing or damaged        | its id is lost                                                     |
 * | an id whose live version was lost   | listed in `lost`; if the log still shows an older version (or one  |
 * |                                     |   its lost DELETE removed), repair appends a DELETE for it in the  |
 * |                                     |   segment of the last commit: it never serves a superseded version |
 * | then                                | writes a checkpoint and checks again; `repaired` says it passed    |
 *
 * Which ids were lost is decided against the index before repair: the
 * open store's; for a store that does not open, its newest usable
 * checkpoint replayed forward over what can be read (or the one that
 * vouches for lost bytes). See `repairPlan` for the rules. Damage newer
 * than any checkpoint in a store that does not open is unknown to that
 * index; there a record whose header and key survive (a flipped value byte)
 * still names its id, which is then listed as lost unless a later record of
 * that id superseded it.
 */
import { Blake3 } from "./blake3.ts";
import type { File, FileSystem } from "./fs.ts";
import { isFsError } from "./fs.ts";
import {
  assert, BLOB_HASH_SIZE, BLOB_RECORD_SIZE, COMMIT_RECORD_SIZE, DELETE_RECORD_SIZE, INDEX_BLOB_FLAG, INDEX_SIZE_MASK,
  IntegrityError, KEY_SIZE, MAX_RECORD_SIZE, PUT_HEADER_SIZE, RECORD_HEADER_SIZE, RECORD_KEY_OFFSET, RECORD_SIZE_MAX,
  RECORD_SIZE_MIN, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC, StateError, StoreFormatError, TAG_BLOB, TAG_COMMIT, TAG_DELETE,
  TAG_PUT,
} from "./format.ts";
import { parseConfig } from "./config.ts";
import { decodeHints, HINTS_SIZE_MAX, type Hints, type SegmentStat } from "./hints.ts";
import { KeyIndex, type CheckpointMeta } from "./keyindex.ts";
import { joinPath, parseCheckpointName, StorePaths, STORE_FILES, TEMP_SUFFIX } from "./paths.ts";
import {
  commitTxid, deleteKilledSegment, listSegments, type ScanEnd, type ScannedRecord, SegmentFiles, SegmentScanner,
  storageError,
} from "./segments.ts";
import { acquireStoreLock } from "./storelock.ts";
import { idHex, Store } from "./store.ts";
import { UndoLog } from "./undolog.ts";
import { crc32, WasmCore } from "./wasm.ts";

// ---------------------------------------------------------------------------
// Limits

/**
 * Problems listed in one report; past it they are counted in one "more"
 * problem. A wholly garbled segment or a lost index would otherwise make a
 * report as large as the store.
 */
export const CHECK_PROBLEMS_MAX = 1000;
/** Bytes read at once while searching for the next valid record after damage, and while hashing a blob. */
export const CHECK_READ_CHUNK = 1024 * 1024;
/** Bytes a segment rewrite gathers before one write. */
export const REPAIR_WRITE_CHUNK = 4 * 1024 * 1024;

if (CHECK_READ_CHUNK < 2 * RECORD_HEADER_SIZE) throw new Error("check: the resync window must hold a record header");

// ---------------------------------------------------------------------------
// Report types

/**
 * Options of `store.check()`. Every field is optional.
 *
 * @example
 * const report = await store.check({ repair: true, onProgress: (done, total) => bar.update(done / total) });
 */
export interface CheckOptions {
  /** Salvage what can be read, rebuild index and checkpoint, list the ids that could not be saved. Needs the store open for writing. Default false. */
  repair?: boolean;
  /**
   * Called as check reads: bytes done and total. The total counts segment
   * bytes, plus blob bytes from the blob phase on (they are known only once
   * the log is replayed). A repair checks twice; the count restarts for the second pass.
   */
  onProgress?: (done: number, total: number) => void;
}

const CHECK_OPTION_NAMES = ["repair", "onProgress"];
const CHECK_PATH_OPTION_NAMES = [...CHECK_OPTION_NAMES, "fs", "lockTimeout"];

/** Options of `checkPath()`: those of `store.check()`, plus the adapter and how long to wait for the lock. */
export interface CheckPathOptions extends CheckOptions {
  /** The filesystem adapter (mod.ts passes the runtime's). */
  fs: FileSystem;
  /** Wait up to this many milliseconds for the store's lock. Default 0: LockedError at once. */
  lockTimeout?: number;
}

/** The kinds of problem check reports (see the table atop check.ts). */
export type CheckProblemKind =
  | "segment-magic" | "segment-record" | "segment-txid" | "index-missing" | "index-extra" | "index-stale"
  | "checkpoint" | "checkpoint-mismatch" | "hints" | "hints-mismatch" | "stats-mismatch" | "blob-missing"
  | "blob-length" | "blob-hash" | "open" | "more";

/** One thing wrong, with where it is. */
export interface CheckProblem {
  kind: CheckProblemKind;
  message: string;
  segment?: number;
  offset?: number;
  file?: string;
  /** The id concerned, lower-case hex. */
  id?: string;
}

/** What check found (and, with `repair`, did). */
export interface CheckReport {
  /** True when nothing was wrong. */
  ok: boolean;
  /** What was wrong, before any repair; at most CHECK_PROBLEMS_MAX, then one "more". */
  problems: CheckProblem[];
  /** Ids (hex, sorted) whose live version could not be saved; they are absent after repair. */
  lost: string[];
  /** True when repair ran and the store then passed a fresh check. */
  repaired: boolean;
  /** Valid records read. */
  records: number;
  /** Segment files read. */
  segments: number;
  /** Blob files verified. */
  blobs: number;
}

// ---------------------------------------------------------------------------
// Walking a segment, resynchronising after damage

/** Called for a stretch of a segment that holds no valid record. `header`: the failed record's first bytes when its header was in bounds. */
export type DamageVisitor = (start: number, end: number, reason: ScanEnd, header: Uint8Array | undefined) => void;

/**
 * Calls `onRecord` for every valid record of a segment file, in order, and
 * `onDamage` for every stretch holding none. After a record that fails
 * validation it searches forward byte by byte for the next offset where a
 * whole record passes (bounds first, then the CRC) and goes on from there,
 * so one damaged record costs only itself. A record's `bytes` is valid only
 * during its call. Returns the number of valid records.
 *
 * @example
 * walkSegment(file, file.size(), (r) => n++, (start, end, why) => console.log(`${why}: ${start}..${end}`));
 */
export function walkSegment(file: File, size: number, onRecord: (r: ScannedRecord) => void, onDamage: DamageVisitor): number {
  let records = 0;
  const resync = new ResyncFinder(file, size);
  const emit = (r: ScannedRecord): number => {
    onRecord(r);
    records++;
    return r.offset + r.size;
  };
  let offset = SEGMENT_HEADER_SIZE;
  const magic = new Uint8Array(SEGMENT_HEADER_SIZE);
  const magicOk = size >= SEGMENT_HEADER_SIZE && file.read(magic, 0) === SEGMENT_HEADER_SIZE &&
    magic.every((b, i) => b === SEGMENT_MAGIC[i]);
  if (!magicOk) {
    const found = resync.find(SEGMENT_HEADER_SIZE);
    onDamage(0, found?.offset ?? size, "bad-magic", undefined);
    if (found === undefined) return records;
    offset = emit(found);
  }
  while (offset < size) {
    // After a bad magic, offset is past the header, so the scanner does not look at the magic again.
    const scan = new SegmentScanner(file, size, crc32, offset);
    for (let r = scan.next(); r !== undefined; r = scan.next()) emit(r);
    if (scan.end === "eof") break;
    assert(scan.end !== undefined && scan.end !== "bad-magic", "a scan that started on a good magic ends at a record");
    const start = scan.endOffset;
    let header: Uint8Array | undefined;
    if (scan.end === "bad-crc" || scan.end === "truncated") {
      header = new Uint8Array(Math.min(DELETE_RECORD_SIZE, size - start));
      header = header.subarray(0, file.read(header, start));
    }
    const found = resync.find(start + 1);
    onDamage(start, found?.offset ?? size, scan.end, header);
    if (found === undefined) break;
    offset = emit(found);
  }
  return records;
}

/** Searches a segment for the next offset where a valid record lies. */
class ResyncFinder {
  private buf: Uint8Array | undefined;
  private dv: DataView | undefined;
  private bufStart = 0;
  private bufLen = 0;
  constructor(private readonly file: File, private readonly size: number) {}

  /** The first valid record at or after `from`, or undefined. */
  find(from: number): ScannedRecord | undefined {
    const size = this.size;
    for (let p = from; p + RECORD_HEADER_SIZE <= size; p++) {
      if (p < this.bufStart || p + RECORD_HEADER_SIZE > this.bufStart + this.bufLen) this.fill(p);
      const buf = this.buf!;
      const at = p - this.bufStart;
      const tag = buf[at + 8];
      if (tag > TAG_BLOB) continue;
      const recordSize = this.dv!.getUint32(at + 4, true);
      // Bounds before trust: nothing is read or allocated from a size out of range for its tag or past the file.
      if (recordSize < RECORD_SIZE_MIN[tag] || recordSize > RECORD_SIZE_MAX[tag] || p + recordSize > size) continue;
      const bytes = at + recordSize <= this.bufLen ? buf.subarray(at, at + recordSize) : this.readWhole(p, recordSize);
      if (bytes === undefined) continue;
      const stored = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true);
      if (crc32(bytes.subarray(4)) !== stored) continue;
      return { tag, offset: p, size: recordSize, bytes };
    }
    return undefined;
  }

  private fill(p: number): void {
    if (this.buf === undefined) {
      this.buf = new Uint8Array(Math.min(CHECK_READ_CHUNK, Math.max(RECORD_HEADER_SIZE, this.size)));
      this.dv = new DataView(this.buf.buffer);
    }
    const want = Math.min(this.buf.length, this.size - p);
    this.bufLen = this.file.read(this.buf.subarray(0, want), p);
    this.bufStart = p;
  }

  /** A candidate record longer than the window, read on its own. Its size was bounds-checked by the caller. */
  private readWhole(p: number, recordSize: number): Uint8Array | undefined {
    assert(recordSize <= MAX_RECORD_SIZE, "candidate size checked against its tag's bound");
    const bytes = new Uint8Array(recordSize);
    return this.file.read(bytes, p) === recordSize ? bytes : undefined;
  }
}

// ---------------------------------------------------------------------------
// Replaying the log into a fresh index

/** A position in the log: the offset just after a record, in its segment. */
interface LogPosition {
  segment: number;
  offset: number;
}

function positionBefore(segment: number, offset: number, position: LogPosition): boolean {
  return segment < position.segment || (segment === position.segment && offset < position.offset);
}

/** True when (segment, offset) comes after (otherSegment, otherOffset) in the log. */
function positionAfter(segment: number, offset: number, otherSegment: number, otherOffset: number): boolean {
  return segment > otherSegment || (segment === otherSegment && offset > otherOffset);
}

/**
 * The log replayed into its own KeyIndex by the rules of store.ts's
 * openReplay: PUT and BLOB set the id; DELETE(id, killed) removes it only
 * while the index holds it in segment `killed` (invariant 3); a COMMIT
 * makes what came before it final; what follows the last COMMIT is undone.
 */
class LogReplay {
  private readonly undo = new UndoLog();
  private uncommittedDeletes: number[] = [];
  /** Bytes of committed DELETE records per segment (what the store's stats call deleteBytes). */
  readonly deleteBytes = new Map<number, number>();
  lastCommit: LogPosition | undefined;
  constructor(readonly index: KeyIndex, public lastTxid = 0n, start?: LogPosition) {
    this.lastCommit = start;
  }

  /** Applies one valid record. Returns false for a COMMIT whose txid is not after the last (which still commits, as the best guess). */
  apply(segment: number, r: ScannedRecord): boolean {
    const key = r.bytes.subarray(RECORD_KEY_OFFSET, RECORD_KEY_OFFSET + KEY_SIZE);
    const index = this.index;
    switch (r.tag) {
      case TAG_PUT:
      case TAG_BLOB: {
        // `x | INDEX_BLOB_FLAG` is a negative int32 in JS: `>>> 0` makes it the u32 the index stores.
        const replaced = index.set(key, segment, r.offset, (r.size | (r.tag === TAG_BLOB ? INDEX_BLOB_FLAG : 0)) >>> 0);
        if (replaced) this.undo.push(key, true, index.oldSegment, index.oldOffset, index.oldSize);
        else this.undo.push(key, false, 0, 0, 0);
        return true;
      }
      case TAG_DELETE: {
        this.uncommittedDeletes.push(segment);
        const e = index.lookup(key);
        if (e >= 0 && index.segmentAt(e) === deleteKilledSegment(r.bytes)) {
          index.remove(key);
          this.undo.push(key, true, index.oldSegment, index.oldOffset, index.oldSize);
        }
        return true;
      }
      default: {
        assert(r.tag === TAG_COMMIT, `scanner returned tag ${r.tag}`);
        const txid = commitTxid(r.bytes);
        const rising = txid > this.lastTxid;
        if (rising) this.lastTxid = txid;
        this.undo.clear();
        for (const s of this.uncommittedDeletes) this.deleteBytes.set(s, (this.deleteBytes.get(s) ?? 0) + DELETE_RECORD_SIZE);
        this.uncommittedDeletes = [];
        this.lastCommit = { segment, offset: r.offset + r.size };
        return rising;
      }
    }
  }

  /**
   * Commits what is pending as if a COMMIT of `txid` ended at `position`:
   * a checkpoint vouches that one did, though the log lost it. Returns
   * whether anything was pending.
   */
  commitAt(position: LogPosition, txid: bigint): boolean {
    const any = this.undo.length > 0 || this.uncommittedDeletes.length > 0;
    this.undo.clear();
    for (const s of this.uncommittedDeletes) this.deleteBytes.set(s, (this.deleteBytes.get(s) ?? 0) + DELETE_RECORD_SIZE);
    this.uncommittedDeletes = [];
    if (txid > this.lastTxid) this.lastTxid = txid;
    this.lastCommit = position;
    return any;
  }

  /**
   * Ends the replay. Records after the last COMMIT are an uncommitted tail
   * and undone, unless `keepTail`: in a store open for writing they were
   * committed (its open cut every tail) and only their COMMIT went bad.
   * Returns whether there were any.
   */
  finish(keepTail: boolean): boolean {
    const any = this.undo.length > 0 || this.uncommittedDeletes.length > 0;
    if (keepTail) {
      this.undo.clear();
      for (const s of this.uncommittedDeletes) this.deleteBytes.set(s, (this.deleteBytes.get(s) ?? 0) + DELETE_RECORD_SIZE);
    } else {
      this.undo.unwind((key, had, segment, offset, size) => {
        if (had) this.index.set(key, segment, offset, size);
        else this.index.remove(key);
      });
    }
    this.uncommittedDeletes = [];
    return any;
  }
}

/** Live count and bytes per segment of the ids in `index`. */
function indexBySegment(index: KeyIndex): Map<number, { count: number; bytes: number }> {
  const out = new Map<number, { count: number; bytes: number }>();
  for (let e = 0; e < index.count; e++) {
    const s = index.segmentAt(e);
    let g = out.get(s);
    if (g === undefined) out.set(s, (g = { count: 0, bytes: 0 }));
    g.count++;
    g.bytes += index.sizeAt(e) & INDEX_SIZE_MASK;
  }
  return out;
}

// ---------------------------------------------------------------------------
// One check pass

/** A stretch of a segment with no valid record. */
interface DamagedRegion {
  segment: number;
  start: number;
  /** Offset of the next valid record, or the file's size. */
  end: number;
  reason: ScanEnd;
  /** Known to hold committed data (see the top comment), so a problem and repaired; else an uncommitted tail. */
  corrupt: boolean;
  /** Set for the bytes a checkpoint vouches for past the end of a segment cut short. */
  missing?: boolean;
}

/** The id of a record that failed its CRC but whose header and key look sound: maybe lost. */
interface Suspect {
  key: Uint8Array;
  tag: number;
  /** For a DELETE: the segment it kills, when its body was read. */
  killed: number | undefined;
  segment: number;
  offset: number;
}

/** The checkpoint open would use, under test: loaded, then replayed forward from its position as the walk passes it. */
interface CheckpointUnderTest {
  meta: CheckpointMeta;
  hints: Hints;
  indexPath: string;
  hintsPath: string;
  /** Its index's live count and bytes per segment, as loaded (what hints.N must say). */
  bySegment: Map<number, { count: number; bytes: number }>;
  replay: LogReplay;
  /** Set when the walk passed its position; from then on records are applied to `replay` too. */
  started: boolean;
  /** The full replay's DELETE bytes per segment at that position (what hints.N must say). */
  deleteBytesAtStart: Map<number, number>;
}

/** What a check pass looks at. */
interface CheckTarget {
  fs: FileSystem;
  paths: StorePaths;
  root: string;
  /** The open store's state, when there is one. */
  live?: { index: KeyIndex; segments: Map<number, SegmentStat>; writable: boolean; lastTxid: bigint };
}

/** One pass over a store: `run()` then `report()`. Reads only. */
class StoreCheck {
  private readonly problems: CheckProblem[] = [];
  private problemsUnlisted = 0;
  records = 0;
  private segmentCount = 0;
  private blobCount = 0;
  readonly regions: DamagedRegion[] = [];
  /** COMMIT records whose txid does not rise, by segment: repair drops them. */
  readonly badCommits = new Map<number, Set<number>>();
  readonly full: LogReplay;
  checkpoint: CheckpointUnderTest | undefined;
  /** The newest checkpoint when its position is not a COMMIT in the log: the log lost committed bytes it accounts for. */
  vouching: { meta: CheckpointMeta; index: KeyIndex } | undefined;
  /** Positions checkpoints vouch for (committed at some point), from every pair whose header reads. */
  private readonly vouched: LogPosition[] = [];
  /** The largest transaction id known to have been used (log, checkpoints, the open store): repair's commit goes after it. */
  txidMax = 0n;
  /** Suspects not superseded by a later record of their id, by id hex. */
  readonly suspects = new Map<string, Suspect>();
  /** Ids whose blob file is missing or damaged. */
  readonly blobLost: Uint8Array[] = [];
  private readonly sizes = new Map<number, number>();
  /** Corrupt regions per segment, by start; and the last one in the log. */
  private readonly corruptBySegment = new Map<number, DamagedRegion[]>();
  private corruptLast: DamagedRegion | undefined;
  /** Where the committed log ends: after the last valid COMMIT, or (store open for writing) the end of the last segment. */
  committedEnd: LogPosition | undefined;
  /**
   * True when records after the last valid COMMIT count as committed and
   * exist: in a store open for writing (see LogReplay.finish), or before a
   * position a checkpoint vouches for. Repair then appends a COMMIT for them.
   */
  commitNeeded = false;
  private progressDone = 0;
  private progressTotal = 0;

  constructor(
    private readonly target: CheckTarget,
    private readonly hasher: Blake3,
    private readonly onProgress: ((done: number, total: number) => void) | undefined,
  ) {
    this.full = new LogReplay(new KeyIndex(WasmCore.create()));
  }

  problem(p: CheckProblem): void {
    if (this.problems.length < CHECK_PROBLEMS_MAX) this.problems.push(p);
    else this.problemsUnlisted++;
  }

  private progress(bytes: number): void {
    this.progressDone += bytes;
    this.onProgress?.(this.progressDone, this.progressTotal);
  }

  run(): void {
    const { fs, paths } = this.target;
    const segments = listSegments(fs, paths);
    for (const s of segments) this.progressTotal += fs.stat(paths.segment(s))?.size ?? 0;
    this.checkpoint = this.runCheckpoints(segments);
    this.runSegments(segments);
    this.runRegions();
    this.runIndex();
    this.runCheckpointMatch(segments);
    this.runStats(segments);
    this.runBlobs();
  }

  report(): CheckReport {
    const problems = [...this.problems];
    if (this.problemsUnlisted > 0) {
      problems.push({ kind: "more", message: `${this.problemsUnlisted} more problems, not listed (CHECK_PROBLEMS_MAX is ${CHECK_PROBLEMS_MAX})` });
    }
    return {
      ok: problems.length === 0, problems, lost: [], repaired: false,
      records: this.records, segments: this.segmentCount, blobs: this.blobCount,
    };
  }

  /** True when `offset` was inside segment `segment` when the log was walked (so a record there may have survived). */
  segmentHeld(segment: number, offset: number): boolean {
    return offset < (this.sizes.get(segment) ?? 0);
  }

  /**
   * Segments with damaged regions (committed or not) or COMMITs to drop.
   * Repair rewrites them all: an uncommitted tail that open would cut is
   * cut all the same, but damage in an uncommitted segment before another
   * would make open refuse the store.
   */
  segmentsDamaged(): number[] {
    const set = new Set<number>(this.badCommits.keys());
    for (const r of this.regions) if (this.sizes.has(r.segment)) set.add(r.segment);
    return [...set].sort((a, b) => a - b);
  }

  /** True when `segment` has any damaged region, committed or not. */
  segmentHasRegion(segment: number): boolean {
    return this.regions.some((r) => r.segment === segment);
  }

  /** True when (segment, offset) lies inside a corrupt region. */
  inCorruptRegion(segment: number, offset: number): boolean {
    const list = this.corruptBySegment.get(segment);
    if (list === undefined) return false;
    let lo = 0, hi = list.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (offset < list[mid].start) hi = mid - 1;
      else if (offset >= list[mid].end) lo = mid + 1;
      else return true;
    }
    return false;
  }

  /** True when a corrupt region lies after (segment, offset) in the log. */
  corruptAfter(segment: number, offset: number): boolean {
    const r = this.corruptLast;
    return r !== undefined && positionAfter(r.segment, r.start, segment, offset);
  }

  /** Suspects in corrupt regions, after `from` when given (what the index before repair cannot know). */
  suspectsAfter(from: LogPosition | undefined): Suspect[] {
    const out: Suspect[] = [];
    for (const s of this.suspects.values()) {
      const region = this.regions.find((r) => r.segment === s.segment && r.start === s.offset);
      if (region === undefined || !region.corrupt) continue;
      if (from !== undefined && positionBefore(s.segment, s.offset, from)) continue;
      out.push(s);
    }
    return out;
  }

  // -- checkpoints: every pair's header and hints; the newest usable one is loaded for the walk

  private runCheckpoints(segments: number[]): CheckpointUnderTest | undefined {
    const { fs, paths, root } = this.target;
    const names = fs.readdir(root);
    const indexes = new Set(names.map((n) => parseCheckpointName(n, "index")).filter((n): n is number => n !== undefined));
    const pairs = names.map((n) => parseCheckpointName(n, "hints")).filter((n): n is number => n !== undefined && indexes.has(n));
    pairs.sort((a, b) => b - a);
    const existing = new Set(segments);
    let chosen: CheckpointUnderTest | undefined;
    // Open takes the newest pair that agrees; older pairs are leftovers it ignores (checked only for damage).
    let decided = false;
    for (const n of pairs) {
      const indexPath = paths.index(n);
      const hintsPath = paths.hints(n);
      let file: File | undefined;
      try {
        file = fs.open(indexPath, "r");
        const meta = KeyIndex.readCheckpointMeta(file);
        this.vouched.push({ segment: meta.segment, offset: meta.offset });
        if (meta.txid > this.txidMax) this.txidMax = meta.txid;
        const hints = this.readHints(hintsPath);
        if (hints === undefined) continue;
        if (meta.segment !== n || hints.segment !== n || hints.offset !== meta.offset || hints.txid !== meta.txid) {
          if (!decided) {
            // The index header passed its CRC; hints.N has none, so it is the likelier culprit.
            this.problem({
              kind: "checkpoint", file: hintsPath,
              message: `checkpoint ${indexPath} is not usable: it says segment ${meta.segment} offset ${meta.offset} txid ${meta.txid}, ` +
                `${hintsPath} says segment ${hints.segment} offset ${hints.offset} txid ${hints.txid} (damage, or a checkpoint a crash interrupted)`,
            });
          }
          continue;
        }
        const first = !decided;
        decided = true;
        const commitThere = existing.has(n) && this.isCommitAt(n, meta.offset, meta.txid);
        if (first && !commitThere) {
          this.problem({
            kind: "checkpoint", file: indexPath, segment: n, offset: meta.offset,
            message: `checkpoint ${indexPath} vouches for transaction ${meta.txid} ending at segment ${n} offset ${meta.offset}, ` +
              `but the log has no such COMMIT there (the segment is damaged, cut short or missing)`,
          });
        }
        const { index } = KeyIndex.loadCheckpoint(WasmCore.create(), file);
        if (!first) continue; // loadable; open does not use it
        if (!commitThere) {
          // What the store held at that position: the best account of what the lost bytes held.
          this.vouching = { meta, index };
          continue;
        }
        chosen = {
          meta, hints, indexPath, hintsPath, bySegment: indexBySegment(index),
          replay: new LogReplay(index, meta.txid, { segment: meta.segment, offset: meta.offset }),
          started: false, deleteBytesAtStart: new Map(),
        };
      } catch (e) {
        if (e instanceof IntegrityError || e instanceof RangeError) {
          this.problem({ kind: "checkpoint", message: e.message, file: indexPath, offset: (e as IntegrityError).offset });
        } else if (isFsError(e)) {
          this.problem({ kind: "checkpoint", message: `cannot read checkpoint ${indexPath}: ${e.message}`, file: indexPath });
        } else {
          throw e;
        }
      } finally {
        file?.close();
      }
    }
    return chosen;
  }

  /** hints.N decoded, or undefined after reporting why it is unusable. */
  private readHints(path: string): Hints | undefined {
    const { fs } = this.target;
    let file: File | undefined;
    try {
      file = fs.open(path, "r");
      const size = file.size();
      if (size > HINTS_SIZE_MAX) throw new IntegrityError(`hints file ${path} is unusable: ${size} bytes is over the ${HINTS_SIZE_MAX} limit`, { file: path });
      const buf = new Uint8Array(size);
      if (file.read(buf, 0) !== size) throw new IntegrityError(`hints file ${path} is unusable: it changed while read`, { file: path });
      return decodeHints(buf, path);
    } catch (e) {
      if (!(e instanceof IntegrityError) && !isFsError(e)) throw e;
      this.problem({ kind: "hints", message: (e as Error).message, file: path });
      return undefined;
    } finally {
      file?.close();
    }
  }

  /** True when the bytes just before `offset` in `segment` are a valid COMMIT of `txid` (as open checks a checkpoint). */
  private isCommitAt(segment: number, offset: number, txid: bigint): boolean {
    if (offset < SEGMENT_HEADER_SIZE + COMMIT_RECORD_SIZE) return false;
    const file = this.target.fs.open(this.target.paths.segment(segment), "r");
    try {
      if (file.size() < offset) return false;
      const rec = new Uint8Array(COMMIT_RECORD_SIZE);
      if (file.read(rec, offset - COMMIT_RECORD_SIZE) !== COMMIT_RECORD_SIZE) return false;
      const dv = new DataView(rec.buffer);
      if (dv.getUint32(4, true) !== COMMIT_RECORD_SIZE || rec[8] !== TAG_COMMIT) return false;
      if (crc32(rec.subarray(4)) !== dv.getUint32(0, true)) return false;
      return commitTxid(rec) === txid;
    } finally {
      file.close();
    }
  }

  // -- segments: walk every record, replaying into the full replay (and the checkpoint's from its position)

  private runSegments(segments: number[]): void {
    const { fs, paths } = this.target;
    const cp = this.checkpoint;
    // Records before a position the newest checkpoint vouches for were committed, even if their COMMIT is lost.
    const vouch = this.vouching?.meta;
    let vouchReached = false;
    const reach = (segment: number, offset: number) => {
      if (vouch === undefined || vouchReached || positionBefore(segment, offset, vouch)) return;
      vouchReached = true;
      this.commitNeeded = this.full.commitAt({ segment: vouch.segment, offset: vouch.offset }, vouch.txid);
    };
    for (const segment of segments) {
      const path = paths.segment(segment);
      let file: File;
      try {
        file = fs.open(path, "r");
      } catch (e) {
        if (isFsError(e, "ENOENT")) continue; // deleted since listed (a compaction of the open store cannot run now; another process)
        throw storageError(e, this.target.root, path, "open");
      }
      try {
        const size = file.size();
        this.sizes.set(segment, size);
        this.segmentCount++;
        walkSegment(file, size, (r) => {
          this.records++;
          reach(segment, r.offset);
          if (!this.full.apply(segment, r)) {
            let set = this.badCommits.get(segment);
            if (set === undefined) this.badCommits.set(segment, (set = new Set()));
            set.add(r.offset);
            this.problem({
              kind: "segment-txid", segment, offset: r.offset, file: path,
              message: `segment ${segment} (${path}): COMMIT at offset ${r.offset} has transaction id ${commitTxid(r.bytes)}, not after ${this.full.lastTxid}`,
            });
          }
          if (cp !== undefined) {
            if (cp.started) cp.replay.apply(segment, r);
            else if (segment === cp.meta.segment && r.tag === TAG_COMMIT && r.offset + r.size === cp.meta.offset) {
              cp.started = true;
              cp.deleteBytesAtStart = new Map(this.full.deleteBytes);
            }
          }
          if (this.suspects.size > 0 && r.tag !== TAG_COMMIT) {
            this.suspects.delete(idHex(r.bytes.subarray(RECORD_KEY_OFFSET, RECORD_KEY_OFFSET + KEY_SIZE)));
          }
        }, (start, end, reason, header) => {
          reach(segment, start);
          this.regions.push({ segment, start, end, reason, corrupt: false });
          const suspect = suspectOf(header, segment, start);
          if (suspect !== undefined) this.suspects.set(idHex(suspect.key), suspect);
        });
        this.progress(size);
      } finally {
        file.close();
      }
      reach(segment + 1, 0);
    }
    reach(Infinity, 0);
    const writable = this.target.live?.writable ?? false;
    for (const t of [this.full.lastTxid, this.target.live?.lastTxid ?? 0n]) if (t > this.txidMax) this.txidMax = t;
    if (this.full.finish(writable) && writable) this.commitNeeded = true;
    if (cp?.started) cp.replay.finish(writable);
    const existing = segments.filter((s) => this.sizes.has(s));
    const last = existing[existing.length - 1];
    let end = writable && last !== undefined ? { segment: last, offset: this.sizes.get(last)! } : this.full.lastCommit;
    if (end !== undefined && !this.sizes.has(end.segment)) {
      // A vouched position in a segment that is gone: what was committed ends with the last segment before it.
      const before = existing.filter((s) => s < end!.segment).pop();
      end = before === undefined ? undefined : { segment: before, offset: this.sizes.get(before)! };
    }
    this.committedEnd = end;
  }

  /** Decides which damaged regions are corruption (see the top comment) and reports them. */
  private runRegions(): void {
    const { paths, live } = this.target;
    const last = this.full.lastCommit;
    const vouch = this.vouching?.meta;
    const vouchSize = vouch === undefined ? undefined : this.sizes.get(vouch.segment);
    if (vouch !== undefined && vouchSize !== undefined && vouchSize < vouch.offset) {
      // Cut short below what the checkpoint vouches for: the missing bytes are a damaged region too.
      const tail = this.regions.find((r) => r.segment === vouch.segment && r.end === vouchSize);
      if (tail !== undefined) tail.end = vouch.offset;
      else this.regions.push({ segment: vouch.segment, start: vouchSize, end: vouch.offset, reason: "truncated", corrupt: true, missing: true });
      this.regions.sort((a, b) => a.segment - b.segment || a.start - b.start);
    }
    for (const r of this.regions) {
      r.corrupt = (live?.writable ?? false) || (last !== undefined && positionBefore(r.segment, r.start, last)) ||
        this.vouched.some((v) => positionBefore(r.segment, r.start, v));
      if (!r.corrupt) continue;
      let list = this.corruptBySegment.get(r.segment);
      if (list === undefined) this.corruptBySegment.set(r.segment, (list = []));
      list.push(r); // the walk goes in log order, so each list is sorted by start
      this.corruptLast = r;
      const path = paths.segment(r.segment);
      const size = this.sizes.get(r.segment) ?? 0;
      const after = r.end < size ? `a valid record resumes at offset ${r.end}` : r.end > size
        ? `and the file ends at ${size}, short of offset ${r.end} that ${this.target.paths.index(vouch!.segment)} vouches for`
        : "up to the end of the file";
      if (r.missing) {
        this.problem({
          kind: "segment-record", segment: r.segment, offset: r.start, file: path,
          message: `segment ${r.segment} (${path}) ends at offset ${r.start}, short of offset ${r.end} that ${paths.index(r.segment)} vouches for: ${r.end - r.start} committed bytes are missing`,
        });
      } else if (r.reason === "bad-magic") {
        this.problem({
          kind: "segment-magic", segment: r.segment, offset: 0, file: path,
          message: `segment ${r.segment} (${path}) does not start with the segment magic; ${r.end} bytes unreadable, ${after}`,
        });
      } else {
        this.problem({
          kind: "segment-record", segment: r.segment, offset: r.start, file: path,
          message: `segment ${r.segment} (${path}) has a ${r.reason} record at offset ${r.start}; ${r.end - r.start} bytes unreadable, ${after}`,
        });
      }
    }
  }

  // -- the index against the log

  private runIndex(): void {
    const live = this.target.live;
    if (live === undefined) return;
    this.compareIndexes(live.index, this.full.index, (kind, id, segment, offset, message) => {
      this.problem({ kind, id, segment, offset, file: this.target.paths.segment(segment), message });
    }, "the index");
  }

  /**
   * Reports every difference between `index` and the log's replay `log`,
   * naming `what` (the index, or a checkpoint).
   */
  private compareIndexes(
    index: KeyIndex, log: KeyIndex, report: (kind: "index-missing" | "index-extra" | "index-stale", id: string, segment: number, offset: number, message: string) => void,
    what: string,
  ): void {
    const key = new Uint8Array(KEY_SIZE);
    for (let e = 0; e < index.count; e++) {
      index.keyAt(e, key);
      const s = index.segmentAt(e), o = index.offsetAt(e), z = index.sizeAt(e);
      const f = log.lookup(key);
      const id = idHex(key);
      const why = this.inCorruptRegion(s, o) ? " (that record lies in damaged bytes)" : !this.sizes.has(s) ? " (that segment does not exist)" : "";
      if (f < 0) {
        report("index-extra", id, s, o, `${what} holds id ${id} at segment ${s} offset ${o}${why}, but the log has no live record of it`);
      } else if (log.segmentAt(f) !== s || log.offsetAt(f) !== o || log.sizeAt(f) !== z) {
        report("index-stale", id, s, o,
          `${what} holds id ${id} at segment ${s} offset ${o} (${z & INDEX_SIZE_MASK} bytes)${why}, but its live record is at segment ${log.segmentAt(f)} offset ${log.offsetAt(f)} (${log.sizeAt(f) & INDEX_SIZE_MASK} bytes)`);
      }
    }
    for (let e = 0; e < log.count; e++) {
      log.keyAt(e, key);
      if (index.lookup(key) >= 0) continue;
      const id = idHex(key);
      report("index-missing", id, log.segmentAt(e), log.offsetAt(e),
        `the log has a live record of id ${id} at segment ${log.segmentAt(e)} offset ${log.offsetAt(e)}, which ${what} lacks`);
    }
  }

  /** The checkpoint open would use: replayed forward it must equal the log; its hints must match. */
  private runCheckpointMatch(segments: number[]): void {
    const cp = this.checkpoint;
    if (cp === undefined) return;
    if (!cp.started) {
      this.problem({
        kind: "checkpoint-mismatch", file: cp.indexPath, segment: cp.meta.segment, offset: cp.meta.offset,
        message: `checkpoint ${cp.indexPath}: the walk of the log never reached its position (segment ${cp.meta.segment} offset ${cp.meta.offset})`,
      });
      return;
    }
    this.compareIndexes(cp.replay.index, this.full.index, (_kind, id, segment, offset, message) => {
      this.problem({ kind: "checkpoint-mismatch", id, segment, offset, file: cp.indexPath, message });
    }, `checkpoint ${cp.indexPath} (with the log after it)`);

    const n = cp.meta.segment;
    const mismatch = (segment: number, why: string) => {
      this.problem({ kind: "hints-mismatch", segment, file: cp.hintsPath, message: `hints file ${cp.hintsPath}, segment ${segment}: ${why}` });
    };
    for (const [s, stat] of cp.hints.segments) {
      const size = this.sizes.get(s);
      if (size === undefined) {
        // A segment compacted away after the checkpoint is fine; one at or after its position cannot have been.
        if (s >= n) mismatch(s, "names a segment at or after the checkpoint's that does not exist");
        continue;
      }
      if (s > n) {
        mismatch(s, `names a segment after the checkpoint's segment ${n}`);
        continue;
      }
      const g = cp.bySegment.get(s) ?? { count: 0, bytes: 0 };
      const deleteBytes = cp.deleteBytesAtStart.get(s) ?? 0;
      const expectSize = s < n ? size : cp.meta.offset;
      if (stat.count !== g.count || stat.bytes !== g.bytes) {
        mismatch(s, `says ${stat.count} live records of ${stat.bytes} bytes, index.${n} holds ${g.count} of ${g.bytes}`);
      }
      if (stat.deleteBytes !== deleteBytes) mismatch(s, `says ${stat.deleteBytes} bytes of DELETE records, the log has ${deleteBytes}`);
      if (stat.size !== expectSize) mismatch(s, `says the segment was ${stat.size} bytes, the log says ${expectSize}`);
    }
    for (const s of segments) {
      if (s <= n && this.sizes.has(s) && !cp.hints.segments.has(s)) mismatch(s, "lacks this segment, which existed when it was written");
    }
  }

  /** The open store's per-segment stats against the log's. */
  private runStats(segments: number[]): void {
    const live = this.target.live;
    if (live === undefined) return;
    const bySegment = indexBySegment(this.full.index);
    const mismatch = (segment: number, why: string) => {
      this.problem({ kind: "stats-mismatch", segment, file: this.target.paths.segment(segment), message: `store stats of segment ${segment}: ${why}` });
    };
    for (const s of segments) {
      const size = this.sizes.get(s);
      if (size === undefined) continue;
      const stat = live.segments.get(s);
      if (stat === undefined) {
        mismatch(s, "the store has no stats for this segment");
        continue;
      }
      const g = bySegment.get(s) ?? { count: 0, bytes: 0 };
      const deleteBytes = this.full.deleteBytes.get(s) ?? 0;
      if (stat.count !== g.count || stat.bytes !== g.bytes) {
        mismatch(s, `${stat.count} live records of ${stat.bytes} bytes, the log has ${g.count} of ${g.bytes}`);
      }
      if (stat.deleteBytes !== deleteBytes) mismatch(s, `${stat.deleteBytes} bytes of DELETE records, the log has ${deleteBytes}`);
      if (stat.size !== size) mismatch(s, `size ${stat.size}, the file has ${size}`);
    }
    for (const s of live.segments.keys()) {
      if (!this.sizes.has(s)) mismatch(s, "the store has stats for a segment that does not exist");
    }
  }

  // -- blobs

  private runBlobs(): void {
    const { fs, paths } = this.target;
    const index = this.full.index;
    const blobs: { key: Uint8Array; length: bigint; hash: Uint8Array; serial: bigint }[] = [];
    const rec = new Uint8Array(BLOB_RECORD_SIZE);
    const dv = new DataView(rec.buffer);
    const files = new SegmentFiles(fs, paths, this.target.root); // a bounded set of open handles
    try {
      for (let e = 0; e < index.count; e++) {
        if (!(index.sizeAt(e) & INDEX_BLOB_FLAG)) continue;
        const key = index.keyAt(e);
        const segment = index.segmentAt(e);
        const file = files.get(segment);
        // The walk validated this record; read again, it is checked again before its fields are used.
        const ok = file.read(rec, index.offsetAt(e)) === BLOB_RECORD_SIZE && dv.getUint32(4, true) === BLOB_RECORD_SIZE &&
          rec[8] === TAG_BLOB && crc32(rec.subarray(4)) === dv.getUint32(0, true);
        if (!ok) throw new IntegrityError(`BLOB record of ${idHex(key)} at segment ${segment} offset ${index.offsetAt(e)} changed during check`, { segment, offset: index.offsetAt(e) });
        const body = PUT_HEADER_SIZE;
        blobs.push({
          key, length: dv.getBigUint64(body, true), hash: rec.slice(body + 8, body + 8 + BLOB_HASH_SIZE),
          serial: dv.getBigUint64(body + 8 + BLOB_HASH_SIZE, true),
        });
      }
    } finally {
      files.closeAll();
    }
    for (const b of blobs) this.progressTotal += Number(b.length);
    const chunk = new Uint8Array(CHECK_READ_CHUNK);
    for (const b of blobs) {
      const id = idHex(b.key);
      const path = paths.blob(id, b.serial);
      this.blobCount++;
      const lost = (kind: "blob-missing" | "blob-length" | "blob-hash", message: string) => {
        this.problem({ kind, id, file: path, message });
        this.blobLost.push(b.key);
      };
      const st = fs.stat(path);
      if (st === undefined || !st.isFile) {
        lost("blob-missing", `blob ${id}: its file ${path} does not exist`);
        continue;
      }
      if (BigInt(st.size) !== b.length) {
        lost("blob-length", `blob ${id}: its file ${path} is ${st.size} bytes, its BLOB record says ${b.length}`);
        continue;
      }
      const file = fs.open(path, "r");
      try {
        this.hasher.init();
        for (let at = 0; at < st.size;) {
          const n = file.read(chunk.subarray(0, Math.min(chunk.length, st.size - at)), at);
          if (n <= 0) break;
          this.hasher.update(chunk.subarray(0, n));
          at += n;
          this.progress(n);
        }
      } finally {
        file.close();
      }
      const digest = this.hasher.digest();
      if (!digest.every((x, i) => x === b.hash[i])) lost("blob-hash", `blob ${id}: its file ${path} does not match its BLAKE3 hash (the file is damaged)`);
    }
  }
}

/** The id a damaged record's surviving header names, when it looks like a record of an id. */
function suspectOf(header: Uint8Array | undefined, segment: number, offset: number): Suspect | undefined {
  if (header === undefined || header.length < PUT_HEADER_SIZE) return undefined;
  const tag = header[8];
  if (tag !== TAG_PUT && tag !== TAG_BLOB && tag !== TAG_DELETE) return undefined;
  const key = header.slice(RECORD_KEY_OFFSET, RECORD_KEY_OFFSET + KEY_SIZE);
  const killed = tag === TAG_DELETE && header.length === DELETE_RECORD_SIZE ? deleteKilledSegment(header) : undefined;
  return { key, tag, killed, segment, offset };
}

// ---------------------------------------------------------------------------
// Repair: the plan, then the disk

/** A DELETE repair appends so that a lost id's older version does not show. */
interface RepairDelete {
  key: Uint8Array;
  /** The segment of the record the log would otherwise show (DELETE's killed field). */
  killed: number;
}

/** What repair will write, all decided before anything is written. */
interface RepairPlan {
  /** Segments to rewrite, ascending, each without the COMMITs listed (their txid did not rise). */
  rewrite: Map<number, Set<number>>;
  /**
   * The segment holding the last commit, and where its committed part ends:
   * its rewrite keeps records before `end` only, then appends `deletes` and
   * a COMMIT of `txid` when anything needs committing.
   */
  head: { segment: number; end: number; deletes: RepairDelete[]; commit: boolean; txid: bigint } | undefined;
  /** Ids whose live version could not be saved, hex, sorted. */
  lost: string[];
}

/**
 * Decides what repair writes: which segments to rewrite, which ids are
 * lost, and the DELETEs that keep a lost id's older version (or the version
 * its lost DELETE removed) from showing: repair never serves a version the
 * log superseded.
 *
 * The log is the truth: an index or checkpoint that disagrees with readable
 * records is simply rebuilt. An id is lost only when the log lost bytes
 * that mattered to it:
 * - `before` has it in a record that did not survive (in a dropped region,
 *   past the end of a segment cut short, in a missing segment), and the log
 *   holds no later record of it; or
 * - `before` lacks it, the log has it, and a dropped region follows that
 *   record (where its DELETE may have been); or
 * - its blob file is missing or damaged; or
 * - a damaged record still names it (`suspects`: damage `before` cannot know).
 */
function repairPlan(chk: StoreCheck, before: KeyIndex, suspects: Suspect[]): RepairPlan {
  const log = chk.full.index;
  const committed = chk.committedEnd;
  const lost = new Map<string, Uint8Array>();
  const key = new Uint8Array(KEY_SIZE);
  const survived = (s: number, o: number): boolean =>
    chk.segmentHeld(s, o) && !chk.inCorruptRegion(s, o) && committed !== undefined && positionBefore(s, o, committed);
  for (let e = 0; e < before.count; e++) {
    const s = before.segmentAt(e);
    const o = before.offsetAt(e);
    if (survived(s, o)) continue;
    before.keyAt(e, key);
    const f = log.lookup(key);
    if (f >= 0 && positionAfter(log.segmentAt(f), log.offsetAt(f), s, o)) continue; // the log has a later version
    lost.set(idHex(key), key.slice());
  }
  for (let e = 0; e < log.count; e++) {
    log.keyAt(e, key);
    if (before.lookup(key) >= 0) continue;
    if (chk.corruptAfter(log.segmentAt(e), log.offsetAt(e))) lost.set(idHex(key), key.slice());
  }
  for (const k of chk.blobLost) lost.set(idHex(k), k);
  for (const sus of suspects) {
    // Not superseded by any later record of its id: whatever the log shows for it is older than the lost record.
    if (sus.tag !== TAG_DELETE) lost.set(idHex(sus.key), sus.key);
    else {
      const f = log.lookup(sus.key);
      if (f >= 0 && (sus.killed === undefined || log.segmentAt(f) === sus.killed)) lost.set(idHex(sus.key), sus.key);
    }
  }
  const deletes: RepairDelete[] = [];
  for (const k of lost.values()) {
    const f = log.lookup(k);
    if (f >= 0) deletes.push({ key: k, killed: log.segmentAt(f) });
  }
  const rewrite = new Map<number, Set<number>>();
  for (const segment of chk.segmentsDamaged()) rewrite.set(segment, chk.badCommits.get(segment) ?? new Set());
  let head: RepairPlan["head"];
  if (committed !== undefined) {
    const commit = deletes.length > 0 || chk.commitNeeded;
    if (commit || chk.segmentHasRegion(committed.segment)) {
      if (!rewrite.has(committed.segment)) rewrite.set(committed.segment, chk.badCommits.get(committed.segment) ?? new Set());
      head = { segment: committed.segment, end: committed.offset, deletes, commit, txid: chk.txidMax + 1n };
    }
  } else {
    assert(deletes.length === 0, "nothing is committed, so nothing can show");
  }
  return { rewrite: new Map([...rewrite].sort((a, b) => a[0] - b[0])), head, lost: [...lost.keys()].sort() };
}

/**
 * Carries out a plan, in an order where a crash at any point leaves a store
 * that open either refuses (IntegrityError: run repair again) or opens
 * without showing a superseded version:
 * 1. every rewrite goes to a temp file beside its segment, datasynced;
 * 2. the head's rewrite (with the DELETEs and COMMIT) is renamed into place
 *    first, while the checkpoints still stand: one whose position moved no
 *    longer verifies, one that still does points only at unchanged bytes or
 *    at damage (IntegrityError on read);
 * 3. every index.N / hints.N is deleted and the directory synced, so
 *    nothing refers to offsets about to change;
 * 4. the other rewrites are renamed into place, one directory sync each.
 * Needs the exclusive lock.
 */
function repairDisk(target: CheckTarget, plan: RepairPlan): void {
  const { fs, paths, root } = target;
  try {
    // Temp files of an earlier repair that crashed hold nothing the log needs.
    if (fs.stat(paths.data) !== undefined) {
      for (const dir of fs.readdir(paths.data)) {
        const dirPath = joinPath(paths.data, dir);
        if (!fs.stat(dirPath)?.isDirectory) continue;
        for (const name of fs.readdir(dirPath)) if (name.endsWith(TEMP_SUFFIX)) fs.unlink(joinPath(dirPath, name));
      }
    }
  } catch (e) {
    throw storageError(e, root, paths.data, "repair: remove temp files");
  }
  for (const [segment, drop] of plan.rewrite) {
    repairRewriteSegment(target, segment, drop, plan.head?.segment === segment ? plan.head : undefined);
  }
  const rename = (segment: number) => {
    const path = paths.segment(segment);
    try {
      fs.rename(paths.temp(path), path);
      fs.syncDir(paths.segmentDir(segment));
    } catch (e) {
      throw storageError(e, root, path, "repair: rename rewritten segment");
    }
  };
  if (plan.head !== undefined) rename(plan.head.segment);
  try {
    for (const name of fs.readdir(root)) {
      if (parseCheckpointName(name, "index") !== undefined || parseCheckpointName(name, "hints") !== undefined || name.endsWith(TEMP_SUFFIX)) {
        fs.unlink(joinPath(root, name));
      }
    }
    fs.syncDir(root);
  } catch (e) {
    throw storageError(e, root, root, "repair: remove checkpoints");
  }
  for (const segment of plan.rewrite.keys()) if (segment !== plan.head?.segment) rename(segment);
}

/**
 * Writes `segment`'s valid records (less the COMMITs at `drop`) to its temp
 * file, durably; for the head, only those before `head.end`, then its
 * DELETEs and COMMIT.
 */
function repairRewriteSegment(target: CheckTarget, segment: number, drop: Set<number>, head: RepairPlan["head"]): void {
  const { fs, paths, root } = target;
  const path = paths.segment(segment);
  const temp = paths.temp(path);
  try {
    const src = fs.open(path, "r");
    const out = fs.open(temp, "w+");
    try {
      const buf = new Uint8Array(REPAIR_WRITE_CHUNK);
      let bufLen = 0;
      let written = 0;
      const flush = () => {
        out.write(buf.subarray(0, bufLen), written);
        written += bufLen;
        bufLen = 0;
      };
      const put = (bytes: Uint8Array) => {
        if (bufLen + bytes.length > buf.length) flush();
        if (bytes.length > buf.length) {
          out.write(bytes, written);
          written += bytes.length;
        } else {
          buf.set(bytes, bufLen);
          bufLen += bytes.length;
        }
      };
      put(SEGMENT_MAGIC);
      walkSegment(src, src.size(), (r) => {
        if (r.tag === TAG_COMMIT && drop.has(r.offset)) return;
        if (head !== undefined && r.offset >= head.end) return; // uncommitted: open would cut it
        put(r.bytes);
      }, () => {});
      if (head !== undefined) {
        for (const d of head.deletes) put(recordDelete(d.key, d.killed));
        if (head.commit) put(recordCommit(head.txid));
      }
      flush();
      assert(written <= 2 ** 32 - 1, `rewritten segment ${segment} fits u32 offsets`);
      out.datasync();
    } finally {
      src.close();
      out.close();
    }
  } catch (e) {
    throw storageError(e, root, path, "repair: rewrite segment");
  }
}

/** A DELETE record of `key` killing its version in segment `killed`, laid out as format.ts says. */
function recordDelete(key: Uint8Array, killed: number): Uint8Array {
  const rec = new Uint8Array(DELETE_RECORD_SIZE);
  const dv = new DataView(rec.buffer);
  dv.setUint32(4, DELETE_RECORD_SIZE, true);
  rec[8] = TAG_DELETE;
  rec.set(key, RECORD_KEY_OFFSET);
  dv.setUint32(PUT_HEADER_SIZE, killed, true);
  dv.setUint32(0, crc32(rec.subarray(4)), true);
  return rec;
}

/** A COMMIT record of `txid`. */
function recordCommit(txid: bigint): Uint8Array {
  const rec = new Uint8Array(COMMIT_RECORD_SIZE);
  const dv = new DataView(rec.buffer);
  dv.setUint32(4, COMMIT_RECORD_SIZE, true);
  rec[8] = TAG_COMMIT;
  dv.setBigUint64(RECORD_HEADER_SIZE, txid, true);
  dv.setUint32(0, crc32(rec.subarray(4)), true);
  return rec;
}

/** Checks the repaired store again: `repaired` only when it passes; anything still wrong joins the problems. */
function repairVerify(store: Store, report: CheckReport, hasher: Blake3, onProgress: CheckOptions["onProgress"]): CheckReport {
  const again = new StoreCheck(liveTarget(store), hasher, onProgress);
  again.run();
  const second = again.report();
  report.repaired = second.ok;
  for (const p of second.problems) report.problems.push({ ...p, message: `after repair: ${p.message}` });
  return report;
}

// ---------------------------------------------------------------------------
// Entry points

function checkOptionsParse(options: unknown, names: string[], what: string): { repair: boolean; onProgress: CheckOptions["onProgress"] } {
  if (options === null || typeof options !== "object") throw new TypeError(`${what}: options must be an object, got ${options === null ? "null" : typeof options}`);
  for (const name of Object.keys(options)) {
    if (!names.includes(name)) throw new TypeError(`${what}: unknown option "${name}" (known: ${names.join(", ")})`);
  }
  const o = options as CheckOptions;
  if (o.repair !== undefined && typeof o.repair !== "boolean") throw new TypeError(`${what}: option repair must be a boolean, got ${typeof o.repair}`);
  if (o.onProgress !== undefined && typeof o.onProgress !== "function") throw new TypeError(`${what}: option onProgress must be a function, got ${typeof o.onProgress}`);
  return { repair: o.repair ?? false, onProgress: o.onProgress };
}

function liveTarget(store: Store): CheckTarget {
  const { index, segments } = store.internals();
  return {
    fs: store.fs, paths: store.paths, root: store.path,
    live: { index, segments, writable: !store.readOnly, lastTxid: store.stats().lastTxid },
  };
}

/**
 * Checks an open store (what `store.check()` runs); with `repair`,
 * salvages it in place (see the tables atop check.ts). Needs no open
 * transaction; repair needs the store open for writing. Async only to
 * create the BLAKE3 hasher: the pass itself runs without yielding, so
 * nothing interleaves with it.
 *
 * @example
 * const report = await checkStore(store, { repair: true });
 * if (!report.ok) console.log(report.problems, "lost:", report.lost);
 */
export async function checkStore(store: Store, options: CheckOptions = {}): Promise<CheckReport> {
  const { repair, onProgress } = checkOptionsParse(options, CHECK_OPTION_NAMES, "check");
  store.internals(); // throws StateError ECLOSED on a closed store
  if (repair && store.readOnly) {
    throw new StateError("EREADONLY", `store ${store.path}: check with repair needs the store open for writing (exclusive lock); it is open read-only`, { store: store.path });
  }
  const hasher = Blake3.create();
  if (store.inTransaction) {
    throw new StateError("EBUSY", `store ${store.path}: check needs no open transaction; commit or roll back first`, { store: store.path });
  }
  const target = liveTarget(store);
  const chk = new StoreCheck(target, hasher, onProgress);
  chk.run();
  const report = chk.report();
  if (!repair || report.ok) return report;
  const plan = repairPlan(chk, target.live!.index, []);
  repairDisk(target, plan);
  store.repairReload();
  report.lost = plan.lost;
  return repairVerify(store, report, hasher, onProgress);
}

/**
 * Checks the store at `path`, and with `repair` salvages it: what
 * `segstore check [--repair] PATH` runs. Opens the store (read-only for a
 * plain check) and runs `store.check()`; when the store does not open
 * (IntegrityError: a damaged segment before later ones), checks it without
 * opening, under the lock (shared, or exclusive for repair), and repairs it
 * on disk so that it opens again.
 *
 * @example
 * const report = await checkPath("./data", { fs: nodeFs, repair: true });
 * console.log(report.ok ? "clean" : `${report.problems.length} problems, lost ${report.lost.length} ids`);
 */
export async function checkPath(path: string, options: CheckPathOptions): Promise<CheckReport> {
  const { repair, onProgress } = checkOptionsParse(options, CHECK_PATH_OPTION_NAMES, "checkPath");
  const fs = options.fs;
  if (fs === undefined || typeof fs.open !== "function") throw new TypeError("checkPath: option fs (a FileSystem adapter) is required");
  const lockTimeout = options.lockTimeout ?? 0;
  let store: Store;
  try {
    store = Store.open(path, { fs, readOnly: !repair, lockTimeout });
  } catch (e) {
    if (!(e instanceof IntegrityError)) throw e;
    return await checkPathOffline(path, fs, repair, onProgress, lockTimeout, e);
  }
  try {
    return await store.check({ repair, onProgress });
  } finally {
    store.close();
  }
}

/** check (and repair) of a store that does not open: the same pass, without a live index, under the lock. */
async function checkPathOffline(
  path: string, fs: FileSystem, repair: boolean, onProgress: CheckOptions["onProgress"], lockTimeout: number, openError: IntegrityError,
): Promise<CheckReport> {
  const hasher = Blake3.create();
  const paths = new StorePaths(path, checkReadConfig(fs, path).segmentsPerDir);
  const target: CheckTarget = { fs, paths, root: path };
  let report: CheckReport;
  const lock = acquireStoreLock(fs, paths.lock, repair ? "exclusive" : "shared", lockTimeout, path);
  try {
    const chk = new StoreCheck(target, hasher, onProgress);
    chk.run();
    report = chk.report();
    if (report.ok) {
      report.ok = false;
      report.problems.push({ kind: "open", message: `the store did not open: ${openError.message}`, file: openError.file, segment: openError.segment, offset: openError.offset });
    }
    if (!repair) return report;
    // Before repair: the newest usable checkpoint replayed over what can be read, else the log's own replay.
    const cp = chk.checkpoint?.started ? chk.checkpoint : undefined;
    const known = cp?.meta ?? chk.vouching?.meta;
    const suspects = chk.suspectsAfter(known === undefined ? undefined : { segment: known.segment, offset: known.offset });
    const plan = repairPlan(chk, cp?.replay.index ?? chk.vouching?.index ?? chk.full.index, suspects);
    repairDisk(target, plan);
    report.lost = plan.lost;
  } finally {
    lock.close();
  }
  // The lock is free for a moment here: open takes it again (flock locks of one process on two files exclude each other).
  // Open replays the repaired log in full (repair removed the checkpoints); close writes a new checkpoint.
  const store = Store.open(path, { fs, lockTimeout });
  try {
    store.checkpoint();
    return repairVerify(store, report, hasher, onProgress);
  } finally {
    store.close();
  }
}

/** The config of a store that does not open (for segments_per_dir). */
function checkReadConfig(fs: FileSystem, path: string) {
  const configPath = joinPath(path, STORE_FILES.config);
  let file: File;
  try {
    file = fs.open(configPath, "r");
  } catch (e) {
    if (isFsError(e, "ENOENT")) throw new StoreFormatError(`cannot check ${path}: it is not a segstore store (no config file)`, { store: path, file: configPath });
    throw storageError(e, path, configPath, "open config");
  }
  try {
    const buf = new Uint8Array(Math.min(file.size(), 64 * 1024));
    const n = file.read(buf, 0);
    return parseConfig(new TextDecoder().decode(buf.subarray(0, n)), configPath);
  } finally {
    file.close();
  }
}
