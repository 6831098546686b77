/**
 * The store's lock: flock(2) on STORE/lock, a file that is never renamed or
 * deleted, so the lock always refers to the same inode. A writer holds it
 * exclusive, readers (readOnly) shared. The lock dies with its process, even
 * by SIGKILL: nothing stale is left. The holder writes "pid host runtime"
 * into the file so a LockedError can say who holds it.
 */
import type { File, FileSystem } from "./fs.ts";
import { isFsError } from "./fs.ts";
import { LockedError, StorageError } from "./format.ts";

/** How often a waiting open retries a held lock. */
export const LOCK_POLL_MS = 20;

/** Sleeps synchronously (the engine is synchronous; Atomics.wait works on the main thread of Node and Deno). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Information about this process written into the lock file. */
export interface LockOwner {
  pid: number;
  host: string;
  runtime: string;
}

/**
 * Takes the lock on `path`. Fails fast with LockedError unless `timeoutMs`
 * is given, then retries until it passes.
 *
 * @example
 * const lock = acquireStoreLock(fs, "/data/store/lock", "exclusive", 0, "/data/store", owner);
 * lock.close(); // releases it
 */
export function acquireStoreLock(
  fs: FileSystem, path: string, mode: "exclusive" | "shared", timeoutMs: number, store: string, owner?: LockOwner,
): File {
  let file: File;
  try {
    file = fs.open(path, "r+");
  } catch (e) {
    if (!isFsError(e, "ENOENT")) throw e;
    file = fs.open(path, "w+"); // an old or damaged store without its lock file
  }
  const deadline = Date.now() + Math.max(0, timeoutMs);
  for (;;) {
    let got: boolean;
    try {
      got = file.lock(mode, false);
    } catch (e) {
      file.close();
      const code = isFsError(e) ? e.code : "EIO";
      throw new StorageError(code, `cannot lock ${path} of store ${store}: ${(e as Error).message}`, { store, file: path, cause: e });
    }
    if (got) break;
    if (Date.now() >= deadline) {
      const holder = readHolder(file);
      file.close();
      const waited = timeoutMs > 0 ? ` after waiting ${timeoutMs} ms` : "";
      throw new LockedError(
        `store ${store} is locked by ${holder}${waited} (${mode === "exclusive" ? "it is open" : "it is open for writing"} elsewhere; pass { lockTimeout } to wait)`,
        holder, { store, file: path },
      );
    }
    sleepSync(LOCK_POLL_MS);
  }
  if (mode === "exclusive" && owner !== undefined) {
    const text = new TextEncoder().encode(`${owner.pid} ${owner.host} ${owner.runtime}\n`);
    try {
      file.truncate(0);
      file.write(text, 0);
    } catch {
      // Who holds the lock is a courtesy for error messages; the lock itself is what matters.
    }
  }
  return file;
}

function readHolder(file: File): string {
  try {
    const buf = new Uint8Array(256);
    const n = file.read(buf, 0);
    const text = new TextDecoder().decode(buf.subarray(0, n)).trim();
    const m = /^(\d+) (\S+) (\S+)$/.exec(text);
    if (m) return `process ${m[1]} on ${m[2]} (${m[3]})`;
  } catch {
    // fall through
  }
  return "another process";
}
