/**
 * The filesystem contract: everything the engine asks of the operating
 * system, in one small interface. `adapters/node.ts`, `adapters/deno.ts` and
 * `adapters/faulty.ts` implement it; nothing under `src/` touches a runtime.
 *
 * The contract, call by call (what the engine may rely on, no more):
 *
 * - Paths are strings joined with "/" (see `paths.ts`); adapters take them
 *   as given. A missing file or directory raises `FsError` with code
 *   `ENOENT`; every OS failure raises `FsError` with the code the OS gave
 *   (`EEXIST`, `EAGAIN`, `ENOSPC`, `EIO`, `ENOTDIR`, `EISDIR`, `ENOTEMPTY`,
 *   `EACCES`, `EBADF`, ...), the syscall and the path. Adapters map their
 *   runtime's errors once, in one function, keeping the message.
 * - `File.read(buf, position)` reads up to `buf.length` bytes at `position`
 *   and returns the count. It is short only at end of file (adapters loop
 *   over the OS's short reads); 0 means `position >= size`.
 * - `File.write(buf, position)` writes all of `buf` at `position` or throws.
 *   A failed write may have written a prefix: the engine treats the file's
 *   tail past its last known-good length as unknown after any failure.
 * - `File.writeAsync(buf, position)` is `write` done off the calling thread
 *   where the runtime can (Node's libuv pool, Deno's blocking-task threads),
 *   so the caller can hash while the kernel copies. It settles as `write`
 *   returns or throws. Until it settles, `buf` must not change and no other
 *   call may be made on the file but one `datasyncAsync` (adapters assert
 *   that `close` is not): the engine keeps at most one in flight per file
 *   and always awaits it.
 * - `File.datasyncAsync()` is `datasync` off the calling thread, and may
 *   run beside one `writeAsync` (the OS allows fdatasync beside write on
 *   one file). It is a hint: the engine uses it to start writeback early,
 *   as RocksDB's bytes_per_sync does, and relies on nothing it does;
 *   durability comes only from `datasync`.
 * - `File.datasync()` makes the file's contents durable (fdatasync);
 *   `File.sync()` also its metadata (fsync). Neither makes the file's NAME
 *   durable: a create, rename or unlink is durable only after `syncDir` of
 *   the directory holding the name (strict POSIX; ext4 is kinder, others and
 *   power losses are not).
 * - `rename(from, to)` replaces `to` atomically if it exists (same
 *   directory or same filesystem); across filesystems it raises `EXDEV`.
 * - `readdir(path)` returns names (no "." or ".."), in no promised order.
 * - `File.lock(mode, wait)` takes an flock(2)-style advisory lock on the open
 *   file: "exclusive" excludes every other lock, "shared" only exclusive ones.
 *   With `wait = false` it returns false at once when the lock is held
 *   elsewhere; with `wait = true` it blocks (the faulty adapter, being
 *   single-threaded, raises EDEADLK instead of blocking forever). The lock belongs to the open
 *   file description: it vanishes when the file is closed or the process
 *   dies (even by SIGKILL), and a Node process and a Deno process exclude
 *   each other (both use flock(2)).
 * - `stat(path)` returns undefined for a missing path (ENOENT) instead of
 *   throwing; a file where a directory was expected (ENOTDIR) still throws.
 * - `unlink` of a directory raises EISDIR, `rmdir` of a file ENOTDIR (as
 *   Linux does), `rmdir` of a non-empty directory ENOTEMPTY.
 *
 * Sockets (for the server): `listen` and `connect` give each connection as a
 * pair of web streams of bytes:
 * - `readable` ends when the peer half-closes; while its queue is full the
 *   adapter stops reading the socket, so a slow reader slows the sender.
 * - `writable.write(chunk)` resolves once the chunk was handed to the
 *   kernel (the caller may then reuse the buffer); a sender that awaits each
 *   write reads its source only as fast as the socket drains.
 *   `writable.close()` half-closes (sends FIN): the peer's readable ends and
 *   our readable still receives its reply.
 * - `close()` ends both directions at once; the socket is also freed when
 *   both directions have ended.
 * - A unix socket is created owner-only (0600). A socket file left by a dead
 *   server is replaced; one with a live server raises EADDRINUSE; a path
 *   holding anything else raises EEXIST and is left alone.
 */

/** How `FileSystem.open` opens a file; named after the fopen modes they mirror. */
export type OpenMode =
  /** read only; the file must exist */
  | "r"
  /** read and write; the file must exist */
  | "r+"
  /** read and write; created if missing, truncated if present */
  | "w+"
  /** read and write; created, and EEXIST if it already exists */
  | "wx+";

/** What `stat` reports. `mtimeMs`/`atimeMs` are milliseconds since the epoch. */
export interface FileStat {
  size: number;
  isFile: boolean;
  isDirectory: boolean;
  mtimeMs: number;
  atimeMs: number;
}

/** An open file. Positions and sizes are byte counts below 2^53. */
export interface File {
  /** The path it was opened with, for error messages. */
  readonly path: string;
  /**
   * How a worker thread of this process reads the same file, in the form
   * the adapter's hash-thread prologue takes (`openRef`): Node, the file
   * descriptor (shared by all threads); Deno, the path. Undefined where no
   * other thread can see the file (the in-memory FaultyFs).
   */
  readonly workerRef?: number | string;
  /** Reads up to `buf.length` bytes at `position`; short only at end of file. */
  read(buf: Uint8Array, position: number): number;
  /** Writes all of `buf` at `position`, or throws. */
  write(buf: Uint8Array, position: number): void;
  /** `write` off the calling thread where the runtime can; see the contract above for what may happen meanwhile. */
  writeAsync(buf: Uint8Array, position: number): Promise<void>;
  /** The file's current size in bytes. */
  size(): number;
  /** Sets the size; bytes past `length` are gone. */
  truncate(length: number): void;
  /** fdatasync: the contents are durable when it returns. */
  datasync(): void;
  /** fdatasync off the calling thread; may run beside one `writeAsync` (see the contract above). */
  datasyncAsync(): Promise<void>;
  /** fsync: contents and metadata are durable when it returns. */
  sync(): void;
  /** Closes the file and drops any lock taken through it. Idempotent. */
  close(): void;
  /** flock: see the contract above. Returns false only when `wait` is false and the lock is held elsewhere. */
  lock(mode: "exclusive" | "shared", wait: boolean): boolean;
  /** Drops the lock taken through this file. */
  unlock(): void;
}

/** What `Connection.subscribe` delivers to. */
export interface ConnectionReader {
  /** A chunk read; return false to stop reading until `resume()`. */
  onChunk(chunk: Uint8Array): boolean;
  /** The peer half-closed, or the connection was closed here: nothing more comes. */
  onEnd(): void;
  /** Reading failed: nothing more comes. */
  onError(error: Error): void;
}

/** A bidirectional byte stream: one socket connection. */
export interface Connection {
  readonly readable: ReadableStream<Uint8Array>;
  /**
   * Optional: what `readable` gives, pushed to `reader` as it is read,
   * without a web stream in between: each chunk through a stream costs a
   * round of promises, 0.1-0.2 s of CPU per GiB under Node, on the thread
   * a blob transfer is bound by. Call at most once, instead of reading
   * `readable`.
   */
  subscribe?(reader: ConnectionReader): { resume(): void };
  readonly writable: WritableStream<Uint8Array>;
  /** A description of the peer for logs, e.g. "tcp:127.0.0.1:51234" or "unix". */
  readonly remote: string;
  /** Ends both directions at once; idempotent. */
  close(): void;
  /**
   * Optional: gives back a chunk `readable` produced once the reader keeps
   * no reference into it, so the adapter may read the socket into its
   * buffer again instead of allocating one per read (a 1 GiB blob is 16,384
   * reads of 64 KiB). An adapter ignores chunks that are not its own.
   */
  recycle?(chunk: Uint8Array): void;
}

/** A listening socket. */
export interface Listener {
  /** The address it listens on, with the real port when 0 was asked for: "tcp://127.0.0.1:7070" or "unix:/path". */
  readonly url: string;
  /** Stops accepting; open connections are not touched. */
  close(): Promise<void>;
}

/** The runtime's filesystem (and sockets), as the engine sees it. */
export interface FileSystem {
  /** "node", "deno" or "faulty"; for messages and stats. */
  readonly name: string;
  open(path: string, mode: OpenMode): File;
  /** Creates one directory; EEXIST if it exists. */
  mkdir(path: string): void;
  /** Names in the directory, in no promised order. */
  readdir(path: string): string[];
  rename(from: string, to: string): void;
  unlink(path: string): void;
  /** Removes an empty directory. */
  rmdir(path: string): void;
  /** undefined when the path does not exist. */
  stat(path: string): FileStat | undefined;
  /** fsync of a directory: makes the names created, renamed or removed in it durable. */
  syncDir(path: string): void;
  /** Resolves a path to an absolute one (for messages and for comparing directories). */
  resolve(path: string): string;
  /** Serves `url` ("tcp://HOST:PORT" or "unix:/path"); calls `onConnection` per accepted connection. */
  listen?(url: string, onConnection: (conn: Connection) => void): Promise<Listener>;
  /** Opens a connection to `url`. */
  connect?(url: string): Promise<Connection>;
}

/** The error codes the engine looks at; adapters may raise others. */
export type FsErrorCode =
  | "ENOENT" | "EEXIST" | "EAGAIN" | "ENOSPC" | "EIO" | "EBADF" | "ENOTDIR"
  | "EISDIR" | "ENOTEMPTY" | "EACCES" | "EPERM" | "EXDEV" | "EMFILE" | "EINVAL"
  | (string & {});

/**
 * An operating-system error, the same in every runtime: `code` is the POSIX
 * name, `syscall` the call, `path` the file. Adapters raise only this.
 *
 * @example
 * try { fs.open("/nope", "r"); } catch (e) { if (e instanceof FsError && e.code === "ENOENT") {} }
 */
export class FsError extends Error {
  readonly code: FsErrorCode;
  readonly syscall: string;
  readonly path: string;
  constructor(code: FsErrorCode, syscall: string, path: string, message?: string, options?: { cause?: unknown }) {
    super(message ?? `${code}: ${syscall} ${path}`, options);
    this.name = "FsError";
    this.code = code;
    this.syscall = syscall;
    this.path = path;
  }
}

/** True when `e` is an FsError with the given code. */
export function isFsError(e: unknown, code?: FsErrorCode): e is FsError {
  return e instanceof FsError && (code === undefined || e.code === code);
}
