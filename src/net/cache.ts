/**
 * The shared blob cache: one directory used by every client process on the
 * machine (ZEO's blob cache, improved), so a blob is downloaded once per
 * machine, not once per process.
 *
 * Map: limits · names · `BlobCache.open` · `acquire` (lock, find or
 * download, hand out an open file) · `checkSize` (eviction) · helpers.
 *
 * ## Files in the cache directory
 *
 * ```
 * NAME              a complete, verified blob (NAME = <store id, 16 hex>-<blob id hex>.<serial>)
 * NAME.dl           a download in progress (or left by a crash: the next downloader truncates it)
 * NAME.lock         the blob's lock file (flock), and its last-use time (mtime)
 * check_size.lock   the cache-wide lock: one process evicts at a time
 * ```
 *
 * ## Protocol (all locks are the adapter's flock, taken without blocking and
 * retried with a growing sleep, so a waiting process keeps its event loop)
 *
 * - A reader holds NAME.lock SHARED while it has NAME open. Before using a
 *   lock file it checks the file's first byte is not "D" (dead: see
 *   eviction); then it writes "L" there, which sets the mtime eviction
 *   goes by (least recently used first).
 * - A downloader holds NAME.lock EXCLUSIVE: it checks NAME is still missing,
 *   writes NAME.dl (truncating any leftover), verifies length and BLAKE3,
 *   fdatasyncs, renames it to NAME, then converts its lock to SHARED and
 *   reads. Exactly one process downloads; the others find NAME when the
 *   lock lets them in.
 * - Eviction runs in at most one process at a time (check_size.lock,
 *   taken without waiting: if another process holds it, it is evicting),
 *   only once the cache passes its target size by CACHE_OVERSHOOT_FRACTION,
 *   and a process checks the size only after it has itself added
 *   CACHE_CHECK_FRACTION of the target (and once at open). It takes each
 *   victim's NAME.lock EXCLUSIVE without waiting, so a blob some process
 *   has open (SHARED) or is downloading is never removed; it writes "D" into
 *   the lock file, unlinks NAME and NAME.lock, then lets go. A process that
 *   had opened the old lock file sees the "D" and starts over.
 */
import type { File, FileSystem } from "../fs.ts";
import { isFsError } from "../fs.ts";
import { IntegrityError } from "../format.ts";
import { joinPath } from "../paths.ts";

// ---------------------------------------------------------------------------
// Limits

/** Default target size of a cache directory: a few large blobs. */
export const CACHE_SIZE_DEFAULT = 4 * 1024 * 1024 * 1024;
/** Eviction starts only when the cache is this fraction over its target, so it runs rarely and in bulk. */
export const CACHE_OVERSHOOT_FRACTION = 0.1;
/** A process re-checks the cache's size after adding this fraction of the target since its last check. */
export const CACHE_CHECK_FRACTION = 0.1;
/** First and longest sleep between tries of a lock held elsewhere (milliseconds). */
export const LOCK_POLL_MS_MIN = 1;
export const LOCK_POLL_MS_MAX = 50;

/** First byte of a lock file: in use ("L", written at each use, which sets its mtime) or dead ("D", being evicted). */
const MARK_LIVE = 0x4c;
const MARK_DEAD = 0x44;

/** Names of the cache's own files. */
export const CACHE_FILES = { checkSizeLock: "check_size.lock" } as const;
/** Suffixes of a blob's download and lock files. */
export const DOWNLOAD_SUFFIX = ".dl";
export const LOCK_SUFFIX = ".lock";

/** A complete blob's name in the cache: store id prefix, blob id, serial. */
export const CACHE_BLOB_NAME = /^[0-9a-f]{16}-[0-9a-f]{64}\.\d{1,20}$/;

/**
 * The cache name of blob `idHex` at `serial` of the store with id `storeId`.
 * The store prefix keeps two stores' blobs of the same id and serial apart.
 */
export function cacheBlobName(storeId: string, idHex: string, serial: bigint): string {
  return `${storeId.slice(0, 16)}-${idHex}.${serial}`;
}

/** A blob held open from the cache: read `file`; `release()` closes it and lets eviction have it again. */
export interface CacheEntry {
  readonly path: string;
  readonly file: File;
  readonly length: number;
  /** Whether this process downloaded it just now (false: it was in the cache). */
  readonly downloaded: boolean;
  release(): void;
}

/** Writes a blob's bytes into `file` (a fresh NAME.dl) and checks them; throws to abandon the download. */
export type Downloader = (file: File) => Promise<void>;

/** What one eviction pass did. */
export interface EvictResult {
  /** False when another process held check_size.lock (it is evicting), or the cache was under its limit. */
  ran: boolean;
  bytesBefore: number;
  bytesAfter: number;
  evicted: number;
  /** Blobs that should have gone but were open or being downloaded. */
  busy: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * A shared blob cache directory.
 *
 * @example
 * const cache = BlobCache.open(fs, "/var/cache/segstore", 1 << 30);
 * const entry = await cache.acquire(name, length, async (file) => { ... write, verify ... });
 * try { entry.file.read(buf, 0); } finally { entry.release(); }
 */
export class BlobCache {
  readonly fs: FileSystem;
  readonly dir: string;
  readonly sizeTarget: number;
  #addedSinceCheck = 0;

  private constructor(fs: FileSystem, dir: string, sizeTarget: number) {
    this.fs = fs;
    this.dir = dir;
    this.sizeTarget = sizeTarget;
  }

  /** Opens (creating it if missing) the cache directory `dir`, and trims it if it is over its limit. */
  static open(fs: FileSystem, dir: string, sizeTarget: number = CACHE_SIZE_DEFAULT): BlobCache {
    if (!Number.isSafeInteger(sizeTarget) || sizeTarget < 0) throw new RangeError(`cache size must be a whole number of bytes >= 0, got ${sizeTarget}`);
    const st = fs.stat(dir);
    if (st === undefined) {
      try {
        fs.mkdir(dir);
      } catch (e) {
        if (!isFsError(e, "EEXIST")) throw e;
      }
    } else if (!st.isDirectory) {
      throw new TypeError(`cache directory ${dir} exists and is not a directory`);
    }
    const cache = new BlobCache(fs, dir, sizeTarget);
    cache.checkSize();
    return cache;
  }

  /**
   * The blob `name` of `length` bytes, open for reading with its lock held
   * shared: from the cache, or downloaded by `download` into NAME.dl first
   * when no process has it (one process downloads; the others wait for it
   * and then read its file). Call `release()` when done reading.
   */
  async acquire(name: string, length: number, download: Downloader): Promise<CacheEntry> {
    if (!CACHE_BLOB_NAME.test(name)) throw new TypeError(`blob cache: ${JSON.stringify(name)} is not a cache blob name`);
    const path = joinPath(this.dir, name);
    const lockPath = path + LOCK_SUFFIX;
    let delay = LOCK_POLL_MS_MIN;
    for (;;) {
      const lock = this.#openLock(lockPath);
      let kept = false;
      try {
        // A reader: the blob is there and nobody is replacing it.
        if (lock.lock("shared", false)) {
          if (isDead(lock)) continue;
          const file = this.#openComplete(path, length);
          if (file !== undefined) {
            kept = true;
            return this.#entry(path, file, lock, length, false);
          }
          lock.unlock();
        }
        // The downloader: nobody else holds the lock at all.
        if (lock.lock("exclusive", false)) {
          if (isDead(lock)) continue;
          let file = this.#openComplete(path, length, true);
          const downloaded = file === undefined;
          if (file === undefined) {
            await this.#download(path, length, download);
            file = this.fs.open(path, "r");
            this.#addedSinceCheck += length;
          }
          // Converting the lock is not atomic (flock drops, then takes): an evictor may slip in between.
          if (!lock.lock("shared", false) || isDead(lock)) {
            file.close();
            continue;
          }
          kept = true;
          const entry = this.#entry(path, file, lock, length, downloaded);
          if (this.#addedSinceCheck > this.sizeTarget * CACHE_CHECK_FRACTION) this.checkSize();
          return entry;
        }
      } finally {
        if (!kept) lock.close();
      }
      await sleep(delay);
      delay = Math.min(delay * 2, LOCK_POLL_MS_MAX);
    }
  }

  #entry(path: string, file: File, lock: File, length: number, downloaded: boolean): CacheEntry {
    touch(lock);
    let released = false;
    return {
      path, file, length, downloaded,
      release() {
        if (released) return;
        released = true;
        file.close();
        lock.close();
      },
    };
  }

  /** Opens `lockPath`, creating it when missing, without ever truncating one that exists (it may say "D"). */
  #openLock(lockPath: string): File {
    for (;;) {
      try {
        return this.fs.open(lockPath, "r+");
      } catch (e) {
        if (!isFsError(e, "ENOENT")) throw e;
      }
      try {
        return this.fs.open(lockPath, "wx+");
      } catch (e) {
        if (!isFsError(e, "EEXIST")) throw e;
      }
    }
  }

  /**
   * The complete blob at `path`, open, or undefined when it is missing or
   * of the wrong size (a foreign or damaged file: removed when `exclusive`,
   * that is when this process holds the blob's lock alone).
   */
  #openComplete(path: string, length: number, exclusive = false): File | undefined {
    let file: File;
    try {
      file = this.fs.open(path, "r");
    } catch (e) {
      if (isFsError(e, "ENOENT")) return undefined;
      throw e;
    }
    if (file.size() === length) return file;
    file.close();
    if (exclusive) unlinkQuiet(this.fs, path);
    return undefined;
  }

  /** Writes NAME.dl with `download`, checks its size, fdatasyncs and renames it to NAME. The exclusive lock is held. */
  async #download(path: string, length: number, download: Downloader): Promise<void> {
    const dlPath = path + DOWNLOAD_SUFFIX;
    const file = this.fs.open(dlPath, "w+");
    try {
      await download(file);
      const size = file.size();
      if (size !== length) throw new IntegrityError(`blob download ${dlPath}: ${size} bytes written, ${length} expected`, { file: dlPath });
      // Durable before its name says "complete": after a power loss NAME is whole or missing.
      file.datasync();
    } catch (e) {
      file.close();
      unlinkQuiet(this.fs, dlPath);
      throw e;
    }
    file.close();
    this.fs.rename(dlPath, path);
  }

  /**
   * Trims the cache to its target, least recently used first, when it is
   * over the target by CACHE_OVERSHOOT_FRACTION and no other process is
   * doing it. Never removes a blob some process has open or is downloading.
   */
  checkSize(): EvictResult {
    this.#addedSinceCheck = 0;
    const result: EvictResult = { ran: false, bytesBefore: 0, bytesAfter: 0, evicted: 0, busy: 0 };
    const lock = this.#openLock(joinPath(this.dir, CACHE_FILES.checkSizeLock));
    try {
      if (!lock.lock("exclusive", false)) return result;
      const names = this.fs.readdir(this.dir);
      const present = new Set(names);
      const blobs: { name: string; size: number; used: number }[] = [];
      let total = 0;
      for (const name of names) {
        const isBlob = CACHE_BLOB_NAME.test(name);
        const isDownload = name.endsWith(DOWNLOAD_SUFFIX) && CACHE_BLOB_NAME.test(name.slice(0, -DOWNLOAD_SUFFIX.length));
        if (!isBlob && !isDownload) continue;
        const st = this.fs.stat(joinPath(this.dir, name));
        if (st === undefined || !st.isFile) continue;
        total += st.size;
        if (isBlob) {
          const lockSt = present.has(name + LOCK_SUFFIX) ? this.fs.stat(joinPath(this.dir, name + LOCK_SUFFIX)) : undefined;
          blobs.push({ name, size: st.size, used: lockSt?.mtimeMs ?? st.mtimeMs });
        }
      }
      result.bytesBefore = total;
      result.bytesAfter = total;
      if (total <= this.sizeTarget * (1 + CACHE_OVERSHOOT_FRACTION)) return result;
      result.ran = true;
      blobs.sort((a, b) => a.used - b.used);
      for (const b of blobs) {
        if (total <= this.sizeTarget) break;
        if (this.#evict(b.name)) {
          total -= b.size;
          result.evicted++;
        } else {
          result.busy++;
        }
      }
      // Downloads abandoned by a crash, and lock files of blobs long gone: removable when no process holds the lock.
      for (const name of names) {
        if (name.endsWith(DOWNLOAD_SUFFIX)) {
          const blob = name.slice(0, -DOWNLOAD_SUFFIX.length);
          if (!CACHE_BLOB_NAME.test(blob)) continue;
          const size = this.fs.stat(joinPath(this.dir, name))?.size ?? 0;
          if (this.#evict(blob, true)) total -= size;
        } else if (name.endsWith(LOCK_SUFFIX)) {
          const blob = name.slice(0, -LOCK_SUFFIX.length);
          if (CACHE_BLOB_NAME.test(blob) && !present.has(blob) && !present.has(blob + DOWNLOAD_SUFFIX)) this.#evict(blob);
        }
      }
      result.bytesAfter = total;
      return result;
    } finally {
      lock.close();
    }
  }

  /** Removes blob `name` (or only its stale NAME.dl) if its lock can be had exclusively now; false if it is in use. */
  #evict(name: string, downloadOnly = false): boolean {
    const path = joinPath(this.dir, name);
    const lock = this.#openLock(path + LOCK_SUFFIX);
    try {
      if (!lock.lock("exclusive", false)) return false;
      if (isDead(lock)) return false;
      if (downloadOnly) {
        unlinkQuiet(this.fs, path + DOWNLOAD_SUFFIX);
        if (this.fs.stat(path) !== undefined) return true;
      }
      lock.write(new Uint8Array([MARK_DEAD]), 0);
      unlinkQuiet(this.fs, path);
      unlinkQuiet(this.fs, path + DOWNLOAD_SUFFIX);
      unlinkQuiet(this.fs, path + LOCK_SUFFIX);
      return true;
    } finally {
      lock.close();
    }
  }
}

/** True when an evictor marked this lock file dead (it is, or is about to be, unlinked). */
function isDead(lock: File): boolean {
  const b = new Uint8Array(1);
  return lock.read(b, 0) === 1 && b[0] === MARK_DEAD;
}

/** Marks a use: the write sets the lock file's mtime, the cache's last-use time. */
function touch(lock: File): void {
  lock.write(new Uint8Array([MARK_LIVE]), 0);
}

function unlinkQuiet(fs: FileSystem, path: string): void {
  try {
    fs.unlink(path);
  } catch (e) {
    if (!isFsError(e, "ENOENT")) throw e;
  }
}
