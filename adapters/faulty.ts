/**
 * FaultyFs: an in-memory, synchronous, deterministic FileSystem that models
 * a strict POSIX disk and injects crashes, I/O errors and corruption, for
 * the engine's crash and error tests (after SQLite's crash VFS, Pebble's
 * errorfs and TigerBeetle's testing storage).
 *
 * ## Fault model
 *
 * What is durable (survives `crash()`):
 * 1. A file's bytes and size as of its last `datasync()` or `sync()` (both
 *    are the same here). Writes and truncates after it are *unsynced*.
 *    Opening with "w+" truncates: an unsynced truncate like any other.
 * 2. A directory's entries as of its last `syncDir()`. A create, rename or
 *    unlink (mkdir, rmdir too) changes only the *current* entries until the
 *    directory holding the name is synced; a rename across directories needs
 *    both synced. A new directory's own entry needs a `syncDir` of its
 *    parent. The root "/" always exists.
 * 3. Names point to file objects (inodes), so a durable name of a renamed or
 *    unlinked file still finds that file's durable bytes after a crash.
 *    If only one of two directories of a cross-directory rename was synced,
 *    both names (or neither) may survive, as on a real journal-less disk.
 *
 * What `crash(options)` leaves (a new FaultyFs; this one then refuses all
 * calls): the durable entries (or, per `entries`, the current ones, or a
 * seeded mix per directory), and per file, per `mode`:
 * - "drop": the durable bytes only (the default, and the strictest);
 * - "keep": every unsynced write and truncate applied;
 * - "torn": all unsynced operations applied, but of the LAST unsynced write
 *   only a seeded prefix, strictly shorter than the write (possibly empty);
 * - "zeros": the size as the unsynced operations left it, with every byte
 *   past the durable size zero (metadata reached the disk, data did not);
 *   unsynced overwrites inside the durable size are lost;
 * - "mixed": one of the four per file, drawn from the seed.
 *
 * Injected faults (`addFault`): every call on the FileSystem and its Files
 * is an operation, numbered from 1 (`opCount`, `log`). A fault matches
 * operations by kind (`ops`) and path (`path`: a substring, or a glob when
 * it has `*`, `?` or `[`), and fires on the `nth` match (then `times` times,
 * default once; `Infinity` for every match from then on), or on each match
 * with `probability`, drawn from the seed. Its action:
 * - "EIO" / "ENOSPC": that operation throws FsError with that code and has
 *   no effect, except a write with `prefix` set, which writes that many
 *   bytes (or a seeded count, "random") first;
 * - "powerloss": that operation and every later one throws EIO; the test
 *   then calls `crash()` to see what the disk kept.
 * Faults are checked in the order added; the first that fires wins. A fault
 * prints itself (`String(fault)`) as the `addFault(...)` call that recreates
 * it, and an injected error's message names the fault, the operation number
 * and the seed, so a failure replays.
 *
 * Corruption: `flipBit(path, offset, bit)` flips one bit of a file now, in
 * its current and durable bytes alike (a media error).
 *
 * Not modelled: `close()` never fails (it is counted, and still releases
 * locks after a power loss, so cleanup code runs); permissions; symlinks;
 * hard links other than those a partial crash creates; opening a directory
 * as a file (EISDIR); disk capacity (inject ENOSPC instead); sockets
 * (`listen`/`connect` are undefined).
 *
 * Locks: flock(2) semantics between Files of one FaultyFs instance, which
 * stands for the whole machine: "exclusive" excludes every other lock,
 * "shared" coexists with shared ones; a lock belongs to its File and is
 * released by `unlock` or `close`. As the instance is single-threaded, a
 * waiting `lock(mode, true)` that would block throws EDEADLK instead of
 * hanging.
 *
 * Helpers for tests, outside the operation count and never faulted:
 * `files()`, `directories()`, `readFile`, `writeFile`, `mkdirp`, `flipBit`,
 * `clone()`, `crash()`, `countOps()`.
 *
 * Map: random numbers · byte buffers · inodes · fault specs · FaultyFile ·
 * FaultyFs (operations, FileSystem calls, faults, crash and clone, helpers).
 */
import { assert } from "../src/format.ts";
import { FsError, type File, type FileStat, type FileSystem, type FsErrorCode, type OpenMode } from "../src/fs.ts";
import { resolvePath } from "./resolve-path.ts";

// ---------------------------------------------------------------------------
// Random numbers

/** mulberry32: a small seeded generator, so every random choice replays from the seed. */
export class SeededRandom {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  /** A float in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [0, n). */
  below(n: number): number {
    assert(Number.isSafeInteger(n) && n > 0, `random bound ${n}`);
    return Math.floor(this.next() * n);
  }
}

// ---------------------------------------------------------------------------
// Byte buffers

/** First capacity of a growing buffer; it doubles from there. */
const BYTES_CAPACITY_MIN = 64;

/** A growable byte array: a file's current or durable contents. */
class Bytes {
  buf: Uint8Array;
  length: number;
  constructor(initial?: Uint8Array) {
    this.buf = new Uint8Array(Math.max(BYTES_CAPACITY_MIN, initial?.length ?? 0));
    this.length = 0;
    if (initial) this.write(initial, 0);
  }
  #reserve(capacity: number): void {
    if (capacity <= this.buf.length) return;
    const grown = new Uint8Array(Math.max(capacity, this.buf.length * 2));
    grown.set(this.buf.subarray(0, this.length));
    this.buf = grown;
  }
  /** Writes `src` at `position`; a gap past the end reads as zeros. */
  write(src: Uint8Array, position: number): void {
    const end = position + src.length;
    this.#reserve(end);
    // Bytes between the old end and `position` may hold stale data from a truncate: zero them.
    if (position > this.length) this.buf.fill(0, this.length, position);
    this.buf.set(src, position);
    if (end > this.length) this.length = end;
  }
  truncate(length: number): void {
    if (length > this.length) {
      this.#reserve(length);
      this.buf.fill(0, this.length, length);
    }
    this.length = length;
  }
  view(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
  copy(): Bytes {
    return new Bytes(this.view());
  }
}

/** An unsynced change to a file, kept so a crash can keep, drop or tear it. */
type PendingOp = { kind: "write"; position: number; bytes: Uint8Array } | { kind: "truncate"; length: number };

function pendingApply(target: Bytes, op: PendingOp): void {
  if (op.kind === "write") target.write(op.bytes, op.position);
  else target.truncate(op.length);
}

// ---------------------------------------------------------------------------
// Inodes

type LockMode = "exclusive" | "shared";

class FileNode {
  readonly kind = "file";
  /** What reads see now. */
  data: Bytes;
  /** What a crash keeps: the contents as of the last datasync/sync. */
  durable: Bytes;
  /** The changes since then, in order: data = durable + pending. */
  pending: PendingOp[] = [];
  /** Who holds a lock on this file, and how. */
  locks = new Map<FaultyFile, LockMode>();
  mtimeMs: number;
  atimeMs: number;
  constructor(now: number, data?: Bytes, durable?: Bytes) {
    this.data = data ?? new Bytes();
    this.durable = durable ?? new Bytes();
    this.mtimeMs = now;
    this.atimeMs = now;
  }
  /** datasync/sync: everything pending reaches the durable copy. */
  sync(): void {
    for (const op of this.pending) pendingApply(this.durable, op);
    this.pending = [];
    assert(this.durable.length === this.data.length, "a synced file's durable size equals its size");
  }
}

class DirNode {
  readonly kind = "dir";
  /** The names a lookup sees now. */
  entries = new Map<string, Inode>();
  /** The names a crash keeps: as of the last syncDir. */
  durableEntries = new Map<string, Inode>();
  mtimeMs: number;
  constructor(now: number) {
    this.mtimeMs = now;
  }
}

type Inode = FileNode | DirNode;

// ---------------------------------------------------------------------------
// Fault specs

/** Every operation kind, as counted and logged. */
export type OpKind =
  | "open" | "read" | "write" | "size" | "truncate" | "datasync" | "sync" | "close" | "lock" | "unlock"
  | "mkdir" | "readdir" | "rename" | "unlink" | "rmdir" | "stat" | "syncDir";

/** Named groups of operation kinds, for `FaultSpec.ops` and `countOps`. */
export const OP_CLASSES = {
  all: ["open", "read", "write", "size", "truncate", "datasync", "sync", "close", "lock", "unlock", "mkdir", "readdir", "rename", "unlink", "rmdir", "stat", "syncDir"],
  reads: ["read", "readdir", "stat", "size"],
  writes: ["write", "truncate"],
  syncs: ["datasync", "sync", "syncDir"],
  renames: ["rename"],
  unlinks: ["unlink", "rmdir"],
  opens: ["open"],
  /** Everything that changes the disk or makes a change durable: the interesting crash points. */
  mutations: ["open", "write", "truncate", "datasync", "sync", "mkdir", "rename", "unlink", "rmdir", "syncDir"],
} as const satisfies Record<string, readonly OpKind[]>;

export type OpClass = keyof typeof OP_CLASSES;

/** Which operations a fault (or `countOps`) looks at. */
export interface OpFilter {
  /** A class name or a list of kinds; default "all". */
  ops?: OpClass | OpKind[];
  /**
   * A substring of the path, or a glob when it contains `*`, `?` or `[`: `*`
   * and `?` stop at "/", `**` crosses it. A glob without "/" is matched
   * against the last path component ("*.tmp"), one with "/" against the
   * whole resolved path ("/store/data/**"). A rename matches on either path.
   */
  path?: string;
}

/** A fault to inject; see the fault model at the top of this file. */
export interface FaultSpec extends OpFilter {
  /** What happens when the fault fires. */
  action: "EIO" | "ENOSPC" | "powerloss";
  /** Fire on the nth matching operation (1-based), counted from when the fault was added. */
  nth?: number;
  /** Or: fire on each matching operation with this probability, drawn from the seed. */
  probability?: number;
  /** How many times it fires; default 1. `Infinity`: every match from `nth` on. */
  times?: number;
  /** For a failing write: bytes written before the error (capped at the write's length), or "random": a seeded count below the write's length. */
  prefix?: number | "random";
}

/** One entry of the operation log. */
export interface OpLogEntry {
  /** The operation's number: 1 for the first call. */
  n: number;
  op: OpKind;
  path: string;
  /** The second path of a rename. */
  to?: string;
}

/** Most entries `FaultyFs.log` keeps; past it, counting goes on and `logTruncated` is set. */
const LOG_ENTRIES_MAX = 1_000_000;

function globToRegExp(glob: string): RegExp {
  let out = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*" && glob[i + 1] === "*") {
      out += ".*";
      i++;
    } else if (c === "*") out += "[^/]*";
    else if (c === "?") out += "[^/]";
    else if (c === "[") {
      const close = glob.indexOf("]", i + 1);
      if (close < 0) out += "\\[";
      else {
        out += "[" + glob.slice(i + 1, close).replace(/^!/, "^").replace(/\\/g, "\\\\") + "]";
        i = close;
      }
    } else out += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return new RegExp("^" + out + "$");
}

/** Compiles an OpFilter into a predicate over (kind, path, to). */
function opFilterCompile(filter: OpFilter): (op: OpKind, path: string, to?: string) => boolean {
  const ops = filter.ops === undefined ? undefined : new Set<OpKind>(typeof filter.ops === "string" ? OP_CLASSES[filter.ops] : filter.ops);
  if (typeof filter.ops === "string" && !(filter.ops in OP_CLASSES)) {
    throw new TypeError(`unknown operation class ${JSON.stringify(filter.ops)}: expected one of ${Object.keys(OP_CLASSES).join(", ")}`);
  }
  let pathMatch: ((p: string) => boolean) | undefined;
  const pattern = filter.path;
  if (pattern !== undefined) {
    if (/[*?[]/.test(pattern)) {
      const re = globToRegExp(pattern);
      const whole = pattern.includes("/");
      pathMatch = (p) => re.test(whole ? p : p.slice(p.lastIndexOf("/") + 1));
    } else {
      pathMatch = (p) => p.includes(pattern);
    }
  }
  return (op, path, to) =>
    (ops === undefined || ops.has(op)) &&
    (pathMatch === undefined || pathMatch(path) || (to !== undefined && pathMatch(to)));
}

/** Spec fields in a fixed order, so a printed fault is stable. */
const FAULT_SPEC_KEYS = ["action", "ops", "path", "nth", "probability", "times", "prefix"] as const;

/** An installed fault: its spec, and how often it matched and fired. */
export class Fault {
  readonly spec: FaultSpec;
  /** Matching operations seen since it was added. */
  matched = 0;
  /** Times it fired. */
  fired = 0;
  readonly #test: (op: OpKind, path: string, to?: string) => boolean;

  constructor(spec: FaultSpec) {
    const known = new Set<string>(FAULT_SPEC_KEYS);
    for (const key of Object.keys(spec)) {
      if (!known.has(key)) throw new TypeError(`unknown fault option ${JSON.stringify(key)}: expected ${FAULT_SPEC_KEYS.join(", ")}`);
    }
    if (!["EIO", "ENOSPC", "powerloss"].includes(spec.action)) {
      throw new TypeError(`fault action ${JSON.stringify(spec.action)}: expected "EIO", "ENOSPC" or "powerloss"`);
    }
    if ((spec.nth === undefined) === (spec.probability === undefined)) {
      throw new TypeError(`a fault needs exactly one of nth or probability: ${JSON.stringify(spec)}`);
    }
    if (spec.nth !== undefined && !(Number.isSafeInteger(spec.nth) && spec.nth >= 1)) {
      throw new TypeError(`fault nth must be an integer >= 1, got ${spec.nth}`);
    }
    if (spec.probability !== undefined && !(spec.probability >= 0 && spec.probability <= 1)) {
      throw new TypeError(`fault probability must be in [0, 1], got ${spec.probability}`);
    }
    if (spec.times !== undefined && !(spec.times >= 1)) throw new TypeError(`fault times must be >= 1, got ${spec.times}`);
    this.spec = { ...spec };
    this.#test = opFilterCompile(spec);
  }

  /** Counts the operation if it matches and says whether the fault fires on it. */
  consider(op: OpKind, path: string, to: string | undefined, random: SeededRandom): boolean {
    if (!this.#test(op, path, to)) return false;
    this.matched++;
    if (this.fired >= (this.spec.times ?? 1)) return false;
    const fires = this.spec.nth !== undefined ? this.matched >= this.spec.nth : random.next() < this.spec.probability!;
    if (fires) this.fired++;
    return fires;
  }

  /** The call that recreates this fault, e.g. `addFault({"action":"EIO","ops":"writes","nth":3})`. */
  toString(): string {
    const fields = FAULT_SPEC_KEYS.filter((k) => this.spec[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${this.spec[k] === Infinity ? "Infinity" : JSON.stringify(this.spec[k])}`);
    return `addFault({${fields.join(",")}})`;
  }
}

// ---------------------------------------------------------------------------
// Files

const WRITABLE_MODES: ReadonlySet<OpenMode> = new Set(["r+", "w+", "wx+"]);

/** An open file of a FaultyFs. */
class FaultyFile implements File {
  #closed = false;
  constructor(
    readonly path: string,
    readonly fs: FaultyFs,
    readonly node: FileNode,
    readonly writable: boolean,
  ) {}

  #check(syscall: string, needWrite = false): void {
    if (this.#closed) throw new FsError("EBADF", syscall, this.path, `EBADF: ${syscall} ${this.path}: the file is closed`);
    if (needWrite && !this.writable) {
      throw new FsError("EBADF", syscall, this.path, `EBADF: ${syscall} ${this.path}: the file is open read-only`);
    }
  }

  read(buf: Uint8Array, position: number): number {
    assert(Number.isSafeInteger(position) && position >= 0, `read position ${position} of ${this.path}`);
    this.fs.operation("read", this.path);
    this.#check("read");
    const data = this.node.data;
    const n = Math.max(0, Math.min(buf.length, data.length - position));
    if (n > 0) buf.set(data.buf.subarray(position, position + n));
    this.node.atimeMs = this.fs.now();
    return n;
  }

  write(buf: Uint8Array, position: number): void {
    assert(Number.isSafeInteger(position) && position >= 0, `write position ${position} of ${this.path}`);
    const fault = this.fs.operation("write", this.path, undefined, true);
    this.#check("write", true);
    let bytes = buf.slice(); // the caller may reuse its buffer; the pending op must not change with it
    if (fault !== undefined) {
      const prefix = fault.fault.spec.prefix;
      const count = prefix === undefined ? 0 : prefix === "random" ? (bytes.length > 0 ? this.fs.random.below(bytes.length) : 0) : Math.min(prefix, bytes.length);
      bytes = bytes.subarray(0, count);
    }
    if (bytes.length > 0) {
      this.node.data.write(bytes, position);
      this.node.pending.push({ kind: "write", position, bytes });
      this.node.mtimeMs = this.fs.now();
    }
    if (fault !== undefined) throw fault.error;
  }

  /** `write`, done at once: the simulated disk has no threads, and a crash point is the same either way. */
  writeAsync(buf: Uint8Array, position: number): Promise<void> {
    try {
      this.write(buf, position);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  size(): number {
    this.fs.operation("size", this.path);
    this.#check("fstat");
    return this.node.data.length;
  }

  truncate(length: number): void {
    assert(Number.isSafeInteger(length) && length >= 0, `truncate length ${length} of ${this.path}`);
    this.fs.operation("truncate", this.path);
    this.#check("ftruncate", true);
    this.node.data.truncate(length);
    this.node.pending.push({ kind: "truncate", length });
    this.node.mtimeMs = this.fs.now();
  }

  datasync(): void {
    this.fs.operation("datasync", this.path);
    this.#check("fdatasync");
    this.node.sync();
  }

  /** `datasync`, done at once: a real one may finish later, but covers no less than what was written before it began. */
  datasyncAsync(): Promise<void> {
    try {
      this.datasync();
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  sync(): void {
    this.fs.operation("sync", this.path);
    this.#check("fsync");
    this.node.sync();
  }

  close(): void {
    this.fs.operationClose(this.path);
    if (this.#closed) return;
    this.#closed = true;
    this.node.locks.delete(this);
  }

  lock(mode: LockMode, wait: boolean): boolean {
    this.fs.operation("lock", this.path);
    this.#check("flock");
    for (const [holder, held] of this.node.locks) {
      if (holder === this) continue;
      if (mode === "exclusive" || held === "exclusive") {
        if (!wait) return false;
        throw new FsError("EDEADLK", "flock", this.path,
          `EDEADLK: flock ${this.path}: a ${held} lock is held by another open file and FaultyFs is single-threaded, so waiting would never end`);
      }
    }
    this.node.locks.set(this, mode);
    return true;
  }

  unlock(): void {
    this.fs.operation("unlock", this.path);
    this.#check("flock");
    this.node.locks.delete(this);
  }
}

// ---------------------------------------------------------------------------
// The filesystem

/** Options of `new FaultyFs(options)`. */
export interface FaultyFsOptions {
  /** Seed of every random choice (probabilities, torn prefixes, mixed modes); default 1. */
  seed?: number;
  /** Source of mtime/atime in milliseconds; default Date.now. */
  clock?: () => number;
  /** Faults to install at once, as by `addFault`. */
  faults?: FaultSpec[];
}

/** Options of `crash(options)`. */
export interface CrashOptions {
  /** What happens to each file's unsynced writes: see the fault model. Default "drop". */
  mode?: "drop" | "keep" | "torn" | "zeros" | "mixed";
  /** Which directory entries survive: the synced ones (default), the current ones, or a seeded choice per directory. */
  entries?: "durable" | "current" | "mixed";
  /** Seed for torn prefixes and mixed choices; default this FaultyFs's seed. */
  seed?: number;
}

const CRASH_MODES = ["drop", "keep", "torn", "zeros"] as const;

/** A path split into its parent and last name. */
interface PathParts {
  /** The resolved path. */
  full: string;
  parentPath: string;
  name: string;
}

function splitPath(full: string): PathParts {
  const i = full.lastIndexOf("/");
  return { full, parentPath: i <= 0 ? "/" : full.slice(0, i), name: full.slice(i + 1) };
}

/**
 * The faulty in-memory filesystem; see the fault model at the top of this file.
 *
 * @example
 * const fs = new FaultyFs({ seed: 7 });
 * const f = fs.open("/a", "w+");
 * f.write(new Uint8Array([1, 2, 3]), 0);
 * f.datasync();                 // bytes durable, name not yet
 * const after = fs.crash();     // power loss now
 * after.stat("/a");             // undefined: "/" was never synced
 */
export class FaultyFs implements FileSystem {
  readonly name = "faulty";
  /** Seed of every random choice. */
  readonly seed: number;
  /** Operations so far (every FileSystem and File call, including failed ones). */
  opCount = 0;
  /** (n, op, path) of each operation, up to LOG_ENTRIES_MAX. */
  readonly log: OpLogEntry[] = [];
  /** True once the log stopped recording (opCount still counts). */
  logTruncated = false;
  /** The generator behind probabilities and random prefixes. */
  readonly random: SeededRandom;
  readonly #clock: () => number;
  readonly #root: DirNode;
  #faults: Fault[] = [];
  /** Set by a power loss or crash(): every later call throws EIO with this reason. */
  #dead: string | undefined;

  constructor(options: FaultyFsOptions = {}) {
    const known = new Set(["seed", "clock", "faults"]);
    for (const key of Object.keys(options)) {
      if (!known.has(key)) throw new TypeError(`unknown FaultyFs option ${JSON.stringify(key)}: expected seed, clock or faults`);
    }
    this.seed = options.seed ?? 1;
    this.random = new SeededRandom(this.seed);
    this.#clock = options.clock ?? Date.now;
    this.#root = new DirNode(this.#clock());
    for (const spec of options.faults ?? []) this.addFault(spec);
  }

  /** The clock's time, for mtime/atime. */
  now(): number {
    return this.#clock();
  }

  // -- operations: counting, logging, faults --------------------------------

  /**
   * Counts and logs one operation and applies the faults. Throws the
   * injected error, except for a write (`deferWrite`), which gets the fired
   * fault back so it can write a prefix first.
   */
  operation(op: OpKind, path: string, to?: string, deferWrite = false): { fault: Fault; error: FsError } | undefined {
    const n = ++this.opCount;
    if (this.log.length < LOG_ENTRIES_MAX) this.log.push(to === undefined ? { n, op, path } : { n, op, path, to });
    else this.logTruncated = true;
    if (this.#dead !== undefined) {
      throw new FsError("EIO", op, path, `EIO: ${op} ${path}: ${this.#dead} (this is op #${n}; seed ${this.seed})`);
    }
    const full = this.resolve(path);
    const fullTo = to === undefined ? undefined : this.resolve(to);
    for (const fault of this.#faults) {
      if (!fault.consider(op, full, fullTo, this.random)) continue;
      const where = `${op} ${path}${to === undefined ? "" : ` -> ${to}`}`;
      if (fault.spec.action === "powerloss") {
        this.#dead = `power lost at op #${n} (${where}) by ${fault}`;
        throw new FsError("EIO", op, path, `EIO: ${where}: ${this.#dead}; seed ${this.seed}`);
      }
      const code: FsErrorCode = fault.spec.action;
      const error = new FsError(code, op, path, `${code}: ${where}: injected at op #${n} by ${fault}; seed ${this.seed}`);
      if (deferWrite) return { fault, error };
      throw error;
    }
    return undefined;
  }

  /** close() is counted and logged but never fails, not even after a power loss. */
  operationClose(path: string): void {
    const n = ++this.opCount;
    if (this.log.length < LOG_ENTRIES_MAX) this.log.push({ n, op: "close", path });
    else this.logTruncated = true;
  }

  // -- path lookup ------------------------------------------------------------

  #lookup(full: string, syscall: string, shown: string): Inode | undefined {
    let node: Inode = this.#root;
    if (full === "/") return node;
    for (const part of full.slice(1).split("/")) {
      if (node.kind !== "dir") throw new FsError("ENOTDIR", syscall, shown, `ENOTDIR: ${syscall} ${shown}: a component is not a directory`);
      const next = node.entries.get(part);
      if (next === undefined) return undefined;
      node = next;
    }
    return node;
  }

  #parentDir(parts: PathParts, syscall: string, shown: string): DirNode {
    const parent = this.#lookup(parts.parentPath, syscall, shown);
    if (parent === undefined) throw new FsError("ENOENT", syscall, shown, `ENOENT: ${syscall} ${shown}: no such directory ${parts.parentPath}`);
    if (parent.kind !== "dir") throw new FsError("ENOTDIR", syscall, shown, `ENOTDIR: ${syscall} ${shown}: ${parts.parentPath} is not a directory`);
    return parent;
  }

  #existing(path: string, syscall: string): Inode {
    const node = this.#lookup(this.resolve(path), syscall, path);
    if (node === undefined) throw new FsError("ENOENT", syscall, path, `ENOENT: ${syscall} ${path}: no such file or directory`);
    return node;
  }

  // -- FileSystem -------------------------------------------------------------

  open(path: string, mode: OpenMode): File {
    this.operation("open", path);
    const parts = splitPath(this.resolve(path));
    const parent = this.#parentDir(parts, "open", path);
    let node = parent.entries.get(parts.name);
    if (node?.kind === "dir") throw new FsError("EISDIR", "open", path, `EISDIR: open ${path}: is a directory`);
    if (node !== undefined && mode === "wx+") throw new FsError("EEXIST", "open", path, `EEXIST: open ${path}: file already exists`);
    if (node === undefined) {
      if (mode === "r" || mode === "r+") throw new FsError("ENOENT", "open", path, `ENOENT: open ${path}: no such file or directory`);
      node = new FileNode(this.now());
      parent.entries.set(parts.name, node);
      parent.mtimeMs = this.now();
    } else if (mode === "w+" && node.data.length > 0) {
      node.data.truncate(0);
      node.pending.push({ kind: "truncate", length: 0 });
    }
    return new FaultyFile(path, this, node, WRITABLE_MODES.has(mode));
  }

  mkdir(path: string): void {
    this.operation("mkdir", path);
    const parts = splitPath(this.resolve(path));
    if (parts.full === "/") throw new FsError("EEXIST", "mkdir", path, `EEXIST: mkdir ${path}: file already exists`);
    const parent = this.#parentDir(parts, "mkdir", path);
    if (parent.entries.has(parts.name)) throw new FsError("EEXIST", "mkdir", path, `EEXIST: mkdir ${path}: file already exists`);
    parent.entries.set(parts.name, new DirNode(this.now()));
    parent.mtimeMs = this.now();
  }

  readdir(path: string): string[] {
    this.operation("readdir", path);
    const node = this.#existing(path, "readdir");
    if (node.kind !== "dir") throw new FsError("ENOTDIR", "readdir", path, `ENOTDIR: readdir ${path}: not a directory`);
    return [...node.entries.keys()];
  }

  rename(from: string, to: string): void {
    this.operation("rename", from, to);
    const src = splitPath(this.resolve(from));
    const dst = splitPath(this.resolve(to));
    const srcParent = this.#parentDir(src, "rename", from);
    const node = srcParent.entries.get(src.name);
    if (node === undefined || src.full === "/") throw new FsError("ENOENT", "rename", from, `ENOENT: rename ${from} -> ${to}: no such file or directory`);
    const dstParent = this.#parentDir(dst, "rename", to);
    if (src.full === dst.full) return;
    if (node.kind === "dir" && (dst.full + "/").startsWith(src.full + "/")) {
      throw new FsError("EINVAL", "rename", from, `EINVAL: rename ${from} -> ${to}: cannot move a directory inside itself`);
    }
    const replaced = dstParent.entries.get(dst.name);
    if (replaced === node) return; // two names of one file (after a partial crash): POSIX says do nothing
    if (replaced !== undefined) {
      if (node.kind === "file" && replaced.kind === "dir") throw new FsError("EISDIR", "rename", from, `EISDIR: rename ${from} -> ${to}: target is a directory`);
      if (node.kind === "dir" && replaced.kind === "file") throw new FsError("ENOTDIR", "rename", from, `ENOTDIR: rename ${from} -> ${to}: target is not a directory`);
      if (replaced.kind === "dir" && replaced.entries.size > 0) throw new FsError("ENOTEMPTY", "rename", from, `ENOTEMPTY: rename ${from} -> ${to}: target directory is not empty`);
    }
    srcParent.entries.delete(src.name);
    dstParent.entries.set(dst.name, node);
    srcParent.mtimeMs = dstParent.mtimeMs = this.now();
  }

  unlink(path: string): void {
    this.operation("unlink", path);
    const parts = splitPath(this.resolve(path));
    const parent = this.#parentDir(parts, "unlink", path);
    const node = parts.full === "/" ? this.#root : parent.entries.get(parts.name);
    if (node === undefined) throw new FsError("ENOENT", "unlink", path, `ENOENT: unlink ${path}: no such file or directory`);
    if (node.kind === "dir") throw new FsError("EISDIR", "unlink", path, `EISDIR: unlink ${path}: is a directory`);
    parent.entries.delete(parts.name);
    parent.mtimeMs = this.now();
  }

  rmdir(path: string): void {
    this.operation("rmdir", path);
    const parts = splitPath(this.resolve(path));
    if (parts.full === "/") throw new FsError("EBUSY", "rmdir", path, `EBUSY: rmdir ${path}: cannot remove the root`);
    const parent = this.#parentDir(parts, "rmdir", path);
    const node = parent.entries.get(parts.name);
    if (node === undefined) throw new FsError("ENOENT", "rmdir", path, `ENOENT: rmdir ${path}: no such file or directory`);
    if (node.kind !== "dir") throw new FsError("ENOTDIR", "rmdir", path, `ENOTDIR: rmdir ${path}: not a directory`);
    if (node.entries.size > 0) throw new FsError("ENOTEMPTY", "rmdir", path, `ENOTEMPTY: rmdir ${path}: directory not empty`);
    parent.entries.delete(parts.name);
    parent.mtimeMs = this.now();
  }

  stat(path: string): FileStat | undefined {
    this.operation("stat", path);
    const node = this.#lookup(this.resolve(path), "stat", path);
    if (node === undefined) return undefined;
    if (node.kind === "dir") return { size: 0, isFile: false, isDirectory: true, mtimeMs: node.mtimeMs, atimeMs: node.mtimeMs };
    return { size: node.data.length, isFile: true, isDirectory: false, mtimeMs: node.mtimeMs, atimeMs: node.atimeMs };
  }

  syncDir(path: string): void {
    this.operation("syncDir", path);
    const node = this.#existing(path, "syncDir");
    if (node.kind !== "dir") throw new FsError("ENOTDIR", "syncDir", path, `ENOTDIR: syncDir ${path}: not a directory`);
    node.durableEntries = new Map(node.entries);
  }

  resolve(path: string): string {
    return resolvePath("/", path);
  }

  // -- faults -----------------------------------------------------------------

  /**
   * Installs a fault; see FaultSpec. Returns it, to read `matched`/`fired` or remove it.
   *
   * @example
   * fs.addFault({ action: "EIO", ops: "writes", path: "*.tmp", nth: 3 });      // the 3rd write to a .tmp file fails
   * fs.addFault({ action: "ENOSPC", ops: ["write"], nth: 1, prefix: "random" }); // a torn failing write
   * fs.addFault({ action: "powerloss", ops: "mutations", nth: 12 });            // then fs.crash()
   */
  addFault(spec: FaultSpec): Fault {
    const fault = new Fault(spec);
    this.#faults.push(fault);
    return fault;
  }

  /** Removes one fault, or all when none is given. */
  removeFault(fault?: Fault): void {
    this.#faults = fault === undefined ? [] : this.#faults.filter((f) => f !== fault);
  }

  /** The installed faults, in the order they are checked. */
  get faults(): readonly Fault[] {
    return this.#faults;
  }

  /** Shorthand: power loss at the nth operation matching `filter` (default: every operation). */
  powerLossAt(nth: number, filter: OpFilter = {}): Fault {
    return this.addFault({ action: "powerloss", nth, ...filter });
  }

  /** True after a power loss fault fired or crash() was called: every call throws EIO. */
  get powerLost(): boolean {
    return this.#dead !== undefined;
  }

  /** Operations in the log matching `filter`: to size a walk over every crash or failure point. */
  countOps(filter: OpFilter = {}): number {
    const test = opFilterCompile(filter);
    return this.log.filter((e) => test(e.op, this.resolve(e.path), e.to === undefined ? undefined : this.resolve(e.to))).length;
  }

  /** The seed and the faults, as code that recreates them: paste into a test to replay. */
  toString(): string {
    return `new FaultyFs({ seed: ${this.seed} })${this.#faults.map((f) => `.${f}`).join("")}`;
  }

  // -- crash and clone --------------------------------------------------------

  /**
   * What a power loss now would leave, as a new FaultyFs (same seed and
   * clock, no faults, operation count 0). This instance then throws EIO on
   * every call, so code still holding its files cannot mistake it for the
   * disk after the crash.
   *
   * @example
   * const disk = fs.crash({ mode: "torn", seed: 3 });
   * const store = open("/store", { fs: disk }); // recovery runs on what survived
   */
  crash(options: CrashOptions = {}): FaultyFs {
    const mode = options.mode ?? "drop";
    const entriesMode = options.entries ?? "durable";
    if (![...CRASH_MODES, "mixed"].includes(mode)) throw new TypeError(`crash mode ${JSON.stringify(mode)}: expected drop, keep, torn, zeros or mixed`);
    if (!["durable", "current", "mixed"].includes(entriesMode)) throw new TypeError(`crash entries ${JSON.stringify(entriesMode)}: expected durable, current or mixed`);
    const random = new SeededRandom(options.seed ?? this.seed);
    const out = new FaultyFs({ seed: this.seed, clock: this.#clock });
    const copies = new Map<Inode, Inode>();
    const now = this.now();

    const fileAfterCrash = (node: FileNode): FileNode => {
      const fileMode = mode === "mixed" ? CRASH_MODES[random.below(CRASH_MODES.length)]! : mode;
      let bytes: Bytes;
      if (fileMode === "keep") bytes = node.data.copy();
      else if (fileMode === "drop") bytes = node.durable.copy();
      else if (fileMode === "zeros") {
        bytes = node.durable.copy();
        bytes.truncate(Math.min(bytes.length, node.data.length));
        bytes.truncate(node.data.length); // grows with zeros
      } else {
        bytes = node.durable.copy();
        let last = -1;
        node.pending.forEach((op, i) => { if (op.kind === "write") last = i; });
        node.pending.forEach((op, i) => {
          if (i !== last) pendingApply(bytes, op);
          else if (op.kind === "write" && op.bytes.length > 0) {
            // Strictly shorter than the write: a torn write never lands whole.
            bytes.write(op.bytes.subarray(0, random.below(op.bytes.length)), op.position);
          }
        });
      }
      const copy = new FileNode(now, bytes, bytes.copy());
      copy.mtimeMs = node.mtimeMs;
      copy.atimeMs = node.atimeMs;
      return copy;
    };

    const copyDir = (from: DirNode, to: DirNode): void => {
      const useCurrent = entriesMode === "current" || (entriesMode === "mixed" && random.below(2) === 1);
      const names = useCurrent ? from.entries : from.durableEntries;
      for (const name of [...names.keys()].sort()) {
        const child = names.get(name)!;
        let copy = copies.get(child);
        if (copy === undefined) {
          if (child.kind === "file") copy = fileAfterCrash(child);
          else {
            const dir = new DirNode(child.mtimeMs);
            copies.set(child, dir); // before recursing, so a directory reachable twice is copied once
            copyDir(child, dir);
            copy = dir;
          }
          copies.set(child, copy);
        }
        to.entries.set(name, copy);
        to.durableEntries.set(name, copy);
      }
    };

    copyDir(this.#root, out.#root);
    this.#dead ??= `crashed: this FaultyFs was replaced by the result of crash() at op #${this.opCount}`;
    return out;
  }

  /**
   * A deep copy of the disk: current and durable contents, current and
   * durable entries, pending writes. Not copied: open files, locks, faults,
   * counters and the log. The copy is alive even if this one lost power.
   */
  clone(): FaultyFs {
    const out = new FaultyFs({ seed: this.seed, clock: this.#clock });
    const copies = new Map<Inode, Inode>([[this.#root, out.#root]]);
    const copyNode = (node: Inode): Inode => {
      let copy = copies.get(node);
      if (copy !== undefined) return copy;
      if (node.kind === "file") {
        const file = new FileNode(node.mtimeMs, node.data.copy(), node.durable.copy());
        file.atimeMs = node.atimeMs;
        file.pending = node.pending.map((op) => (op.kind === "write" ? { ...op, bytes: op.bytes.slice() } : { ...op }));
        copies.set(node, file);
        return file;
      }
      const dir = new DirNode(node.mtimeMs);
      copies.set(node, dir);
      copyDirEntries(node, dir);
      return dir;
    };
    const copyDirEntries = (from: DirNode, to: DirNode): void => {
      for (const [name, child] of from.entries) to.entries.set(name, copyNode(child));
      for (const [name, child] of from.durableEntries) to.durableEntries.set(name, copyNode(child));
    };
    copyDirEntries(this.#root, out.#root);
    return out;
  }

  // -- helpers for tests (not counted, never faulted) ---------------------------

  /**
   * Every file reachable now, path to a copy of its current contents, in path order.
   *
   * @example
   * assert.equal([...fs.files().keys()], ["/store/config", "/store/data/0/0"]);
   */
  files(): Map<string, Uint8Array> {
    const out = new Map<string, Uint8Array>();
    this.#walk(this.#root, "", (path, node) => {
      if (node.kind === "file") out.set(path, node.data.view().slice());
    });
    return out;
  }

  /** Every directory reachable now (not "/"), in path order. */
  directories(): string[] {
    const out: string[] = [];
    this.#walk(this.#root, "", (path, node) => {
      if (node.kind === "dir") out.push(path);
    });
    return out;
  }

  #walk(dir: DirNode, prefix: string, visit: (path: string, node: Inode) => void): void {
    for (const name of [...dir.entries.keys()].sort()) {
      const node = dir.entries.get(name)!;
      const path = `${prefix}/${name}`;
      visit(path, node);
      if (node.kind === "dir") this.#walk(node, path, visit);
    }
  }

  /** A copy of a file's current contents; FsError ENOENT/EISDIR as open would. */
  readFile(path: string): Uint8Array {
    const node = this.#existing(path, "readFile");
    if (node.kind !== "file") throw new FsError("EISDIR", "readFile", path, `EISDIR: readFile ${path}: is a directory`);
    return node.data.view().slice();
  }

  /**
   * Creates or replaces a file with `data`, durably by default (contents
   * synced and its directory entry synced): to set up a test's disk.
   */
  writeFile(path: string, data: Uint8Array, options: { durable?: boolean } = {}): void {
    const durable = options.durable ?? true;
    const parts = splitPath(this.resolve(path));
    const parent = this.#parentDir(parts, "writeFile", path);
    const existing = parent.entries.get(parts.name);
    if (existing?.kind === "dir") throw new FsError("EISDIR", "writeFile", path, `EISDIR: writeFile ${path}: is a directory`);
    const node = existing ?? new FileNode(this.now());
    node.data.truncate(0);
    node.data.write(data, 0);
    node.pending.push({ kind: "truncate", length: 0 }, { kind: "write", position: 0, bytes: data.slice() });
    parent.entries.set(parts.name, node);
    if (durable) {
      node.sync();
      parent.durableEntries.set(parts.name, node);
    }
  }

  /** Creates `path` and any missing parents, each entry durable by default: to set up a test's disk. */
  mkdirp(path: string, options: { durable?: boolean } = {}): void {
    const durable = options.durable ?? true;
    let dir = this.#root;
    let shown = "";
    for (const part of this.resolve(path).split("/").filter(Boolean)) {
      shown += "/" + part;
      let next = dir.entries.get(part);
      if (next === undefined) {
        next = new DirNode(this.now());
        dir.entries.set(part, next);
      }
      if (next.kind !== "dir") throw new FsError("ENOTDIR", "mkdirp", path, `ENOTDIR: mkdirp ${path}: ${shown} is a file`);
      if (durable) dir.durableEntries.set(part, next);
      dir = next;
    }
  }

  /**
   * Flips one bit of a file's bytes, now and durably (a media error): the
   * current contents, the durable contents and any pending write covering
   * `offset`, so a crash in any mode keeps the flip where the byte survives.
   *
   * @example
   * fs.flipBit("/store/data/0/1", 20);     // bit 0 of byte 20
   * fs.flipBit("/store/data/0/1", 20, 7);  // bit 7
   */
  flipBit(path: string, offset: number, bit = 0): void {
    assert(Number.isInteger(bit) && bit >= 0 && bit < 8, `bit ${bit} within a byte`);
    const node = this.#existing(path, "flipBit");
    if (node.kind !== "file") throw new FsError("EISDIR", "flipBit", path, `EISDIR: flipBit ${path}: is a directory`);
    if (!(Number.isSafeInteger(offset) && offset >= 0 && offset < node.data.length)) {
      throw new FsError("EINVAL", "flipBit", path, `EINVAL: flipBit ${path}: offset ${offset} is outside the file's ${node.data.length} bytes`);
    }
    const mask = 1 << bit;
    node.data.buf[offset]! ^= mask;
    if (offset < node.durable.length) node.durable.buf[offset]! ^= mask;
    for (const op of node.pending) {
      if (op.kind === "write" && offset >= op.position && offset < op.position + op.bytes.length) op.bytes[offset - op.position]! ^= mask;
    }
  }
}
