/**
 * The Deno adapter: `denoFs` implements the `FileSystem` contract of
 * `src/fs.ts` over the built-in `Deno` namespace only (no std, no JSR, no
 * `node:` modules), with flock(2) through `FsFile.lockSync`/`tryLockSync`
 * and sockets through `Deno.listen`/`Deno.connect`.
 *
 * Map: error mapping (`denoFsError`) · files (`DenoFile`) · the filesystem
 * (`denoFs`) · sockets (`denoConnection`, `denoListen`, `denoConnect`).
 *
 * Choices, measured or checked on Linux with Deno 2.9:
 * - Positioned I/O is `seekSync` + `readSync`/`writeSync`. Deno's `node:fs`
 *   pread is as fast for 64-byte reads (0.87 µs both) and 10-15% faster for
 *   4 KiB-64 KiB (0.87 vs 1.05 µs at 4 KiB; 4 KiB writes 1.3 vs 1.6 µs), on
 *   a loaded 2-core machine. Not worth it: importing `node:fs` costs ~18 ms
 *   per Deno process, and Deno 2's FsFile exposes no fd, so every File
 *   would need a second descriptor (node:fs for I/O, FsFile for flock). The
 *   seek makes a File's position shared state: fine, as the engine is
 *   synchronous and each call seeks before it reads or writes.
 * - `syncDir` opens the directory read-only and calls `syncSync` on it
 *   (fsync of a directory fd), which works on Linux: no `node:fs` fallback.
 * - `FsFile.lockSync` is flock(2) on Linux, so a Deno holder and a Node
 *   holder (fs-ext) exclude each other (tests/21.lock.test.ts checks it).
 * - A connection's streams are built here over `conn.read`/`conn.write`
 *   rather than `conn.readable`/`conn.writable`: those close the whole
 *   socket when either side ends, where the contract wants half-close (the
 *   writer's close sends FIN, the reader still reads the reply).
 *
 * Only `adapters/runtime.ts` imports this file, and only under Deno.
 */
import { assert } from "../src/format.ts";
import { FsError, type Connection, type ConnectionReader, type File, type FileStat, type FileSystem, type Listener, type OpenMode } from "../src/fs.ts";
import { resolvePath } from "./resolve-path.ts";
import { connectionOf } from "./connection.ts";
import { CLIENT_READ_CHUNK_BYTES, CLIENT_READ_QUEUE_BYTES, ReadBuffers, SOCKET_READ_CHUNK_BYTES, SOCKET_READ_QUEUE_BYTES } from "./read-buffers.ts";
import { formatSocketUrl, parseSocketUrl, type SocketAddress } from "./socket-url.ts";
import { setHashThreadStarter } from "../src/blake3parallel.ts";
import { HASH_THREAD_HANDLER_SOURCE, hashThreadOver, idleStopping, type WorkerHashThread } from "../src/hashthread.ts";

// ---------------------------------------------------------------------------
// Errors

/** Deno's error classes to POSIX names, for errors that carry no `code`. */
const DENO_ERROR_CODES: Record<string, string> = {
  NotFound: "ENOENT",
  AlreadyExists: "EEXIST",
  PermissionDenied: "EACCES",
  NotCapable: "EACCES",
  WouldBlock: "EAGAIN",
  BadResource: "EBADF",
  NotADirectory: "ENOTDIR",
  IsADirectory: "EISDIR",
  DirectoryNotEmpty: "ENOTEMPTY",
  InvalidData: "EINVAL",
  Interrupted: "EINTR",
  TimedOut: "ETIMEDOUT",
  AddrInUse: "EADDRINUSE",
  AddrNotAvailable: "EADDRNOTAVAIL",
  ConnectionRefused: "ECONNREFUSED",
  ConnectionReset: "ECONNRESET",
  ConnectionAborted: "ECONNABORTED",
  NotConnected: "ENOTCONN",
  BrokenPipe: "EPIPE",
  FilesystemLoop: "ELOOP",
  NotSupported: "ENOTSUP",
};

/**
 * The one place a Deno error becomes an FsError: `err.code` when Deno gives
 * one (it does for OS errors: "ENOENT", "ENOTEMPTY"...), else the name of
 * the `Deno.errors` class mapped above; the message and the original error
 * (as `cause`, with its stack) are kept.
 */
function denoFsError(err: unknown, syscall: string, path: string): FsError {
  if (err instanceof FsError) return err;
  const e = err as { code?: unknown; name?: unknown; message?: unknown };
  const name = typeof e?.name === "string" ? e.name : "";
  const code = typeof e?.code === "string" && /^E[A-Z0-9]+$/.test(e.code) ? e.code : DENO_ERROR_CODES[name] ?? "EIO";
  const message = typeof e?.message === "string" ? e.message : String(err);
  return new FsError(code, syscall, path, `${code}: ${message}`, { cause: err });
}

/** Runs `fn`, turning whatever it throws into an FsError for `syscall` on `path`. */
function denoCall<T>(syscall: string, path: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw denoFsError(err, syscall, path);
  }
}

// ---------------------------------------------------------------------------
// Files

/** fopen-style modes of the contract as Deno open options. */
const DENO_OPEN_OPTIONS: Record<OpenMode, Deno.OpenOptions> = {
  "r": { read: true },
  "r+": { read: true, write: true },
  "w+": { read: true, write: true, create: true, truncate: true },
  "wx+": { read: true, write: true, createNew: true },
};

class DenoFile implements File {
  #file: Deno.FsFile;
  #closed = false;
  /** A writeAsync is running on Deno's blocking threads; the file must stay open and unmoved under it. */
  #writing = false;
  /** A datasyncAsync is running on Deno's blocking threads; the file must stay open under it. */
  #syncing = false;
  /**
   * A second handle to the file for datasyncAsync, opened on first use.
   * Deno runs one async op at a time per FsFile, so a background fdatasync
   * on #file would hold up the next writeAsync for its whole duration (17
   * of 512 writes stalled over 5 ms in a probe, none with a second handle);
   * fdatasync flushes the file whichever descriptor asks.
   */
  #syncHandle: Deno.FsFile | undefined;

  /**
   * The absolute path: a worker has a resource table of its own, so it
   * opens the file itself. Resolved at open, as a later chdir would point a
   * relative one elsewhere.
   */
  readonly workerRef: string;

  constructor(readonly path: string, file: Deno.FsFile) {
    this.#file = file;
    this.workerRef = path.startsWith("/") ? path : resolvePath(Deno.cwd(), path);
  }

  #open(syscall: string): Deno.FsFile {
    if (this.#closed) throw new FsError("EBADF", syscall, this.path, `EBADF: ${syscall} ${this.path}: the file is closed`);
    return this.#file;
  }

  read(buf: Uint8Array, position: number): number {
    if (!(Number.isSafeInteger(position) && position >= 0)) assert(false, `read position ${position} of ${this.path}`);
    const file = this.#open("read");
    denoCall("seek", this.path, () => file.seekSync(position, Deno.SeekMode.Start));
    let done = 0;
    // readSync may return fewer bytes than asked before end of file; the contract promises short only at EOF.
    while (done < buf.length) {
      const n = denoCall("read", this.path, () => file.readSync(buf.subarray(done)));
      if (n === null || n === 0) break;
      done += n;
    }
    assert(done <= buf.length, "read count within the buffer");
    return done;
  }

  write(buf: Uint8Array, position: number): void {
    if (!(Number.isSafeInteger(position) && position >= 0)) assert(false, `write position ${position} of ${this.path}`);
    const file = this.#open("write");
    denoCall("seek", this.path, () => file.seekSync(position, Deno.SeekMode.Start));
    let done = 0;
    while (done < buf.length) {
      const n = denoCall("write", this.path, () => file.writeSync(buf.subarray(done)));
      if (!(n > 0)) assert(false, `write of ${this.path} made progress`);
      done += n;
    }
  }

  async writeAsync(buf: Uint8Array, position: number): Promise<void> {
    if (!(Number.isSafeInteger(position) && position >= 0)) assert(false, `write position ${position} of ${this.path}`);
    assert(!this.#writing, `one writeAsync at a time on ${this.path}`);
    const file = this.#open("write");
    denoCall("seek", this.path, () => file.seekSync(position, Deno.SeekMode.Start));
    this.#writing = true;
    try {
      let done = 0;
      while (done < buf.length) {
        let n: number;
        try {
          n = await file.write(buf.subarray(done));
        } catch (err) {
          throw denoFsError(err, "write", this.path);
        }
        if (!(n > 0)) assert(false, `write of ${this.path} made progress`);
        done += n;
      }
    } finally {
      this.#writing = false;
    }
  }

  size(): number {
    const file = this.#open("fstat");
    return denoCall("fstat", this.path, () => file.statSync().size);
  }

  truncate(length: number): void {
    if (!(Number.isSafeInteger(length) && length >= 0)) assert(false, `truncate length ${length} of ${this.path}`);
    const file = this.#open("ftruncate");
    denoCall("ftruncate", this.path, () => file.truncateSync(length));
  }

  datasync(): void {
    const file = this.#open("fdatasync");
    denoCall("fdatasync", this.path, () => file.syncDataSync());
  }

  async datasyncAsync(): Promise<void> {
    assert(!this.#syncing, `one datasyncAsync at a time on ${this.path}`);
    this.#open("fdatasync");
    this.#syncHandle ??= denoCall("open", this.path, () => Deno.openSync(this.path, { read: true }));
    const handle = this.#syncHandle;
    this.#syncing = true;
    try {
      await handle.syncData();
    } catch (err) {
      throw denoFsError(err, "fdatasync", this.path);
    } finally {
      this.#syncing = false;
    }
  }

  sync(): void {
    const file = this.#open("fsync");
    denoCall("fsync", this.path, () => file.syncSync());
  }

  close(): void {
    if (this.#closed) return;
    assert(!this.#writing && !this.#syncing, `close of ${this.path} with a writeAsync or datasyncAsync in flight`);
    this.#closed = true;
    this.#syncHandle?.close();
    denoCall("close", this.path, () => this.#file.close());
  }

  lock(mode: "exclusive" | "shared", wait: boolean): boolean {
    const file = this.#open("flock");
    const exclusive = mode === "exclusive";
    if (!wait) return denoCall("flock", this.path, () => file.tryLockSync(exclusive));
    denoCall("flock", this.path, () => file.lockSync(exclusive));
    return true;
  }

  unlock(): void {
    const file = this.#open("flock");
    denoCall("flock", this.path, () => file.unlockSync());
  }
}

// ---------------------------------------------------------------------------
// Sockets

/** Unix socket permissions: owner only, so only the store's user can talk to its server. */
const UNIX_SOCKET_MODE = 0o600;

/**
 * Wraps a Deno.Conn as a Connection of two web streams with half-close.
 *
 * - readable: pulls `conn.read` only while the queue has room (backpressure
 *   reaches the peer through TCP); ends at the peer's FIN. A client's
 *   connection (`client`) reads bigger chunks. `subscribe` reads the same
 *   chunks into a reader instead, without the stream's round of promises
 *   per chunk, stopping while the reader says so.
 * - writable: each write resolves once all its bytes were written to the
 *   socket; close() sends FIN (`closeWrite`). The socket itself is closed
 *   when both directions have ended, on abort/cancel, or by close().
 */
function denoConnection(conn: Deno.Conn, remote: string, client = false): Connection {
  const queueBytes = client ? CLIENT_READ_QUEUE_BYTES : SOCKET_READ_QUEUE_BYTES;
  let readEnded = false;
  let writeEnded = false;
  let closed = false;
  const closeConn = () => {
    if (closed) return;
    closed = true;
    try { conn.close(); } catch { /* already closed by the runtime */ }
  };
  const closeIfBothEnded = () => {
    if (readEnded && writeEnded) closeConn();
  };

  // Reads go into buffers the reader gives back (recycle): see adapters/read-buffers.ts.
  const buffers = new ReadBuffers(client ? CLIENT_READ_CHUNK_BYTES : SOCKET_READ_CHUNK_BYTES, queueBytes);
  /**
   * One read of the socket: a chunk, null at the end (the peer's FIN, or our own close(), which interrupts a
   * pending read), or it throws the read's error.
   */
  const readChunk = async (): Promise<Uint8Array | null> => {
    const buf = buffers.take();
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch (err) {
      readEnded = true;
      if (closed) return null;
      throw denoFsError(err, "read", remote);
    }
    if (n === null) {
      readEnded = true;
      closeIfBothEnded();
      return null;
    }
    return buffers.chunk(buf, n);
  };
  const makeReadable = (): ReadableStream<Uint8Array> => new ReadableStream<Uint8Array>({
    async pull(controller) {
      let chunk: Uint8Array | null;
      try {
        chunk = await readChunk();
      } catch (e) {
        controller.error(e);
        return;
      }
      if (chunk === null) controller.close();
      else controller.enqueue(chunk);
    },
    cancel() {
      readEnded = true;
      closeConn();
    },
  }, new ByteLengthQueuingStrategy({ highWaterMark: queueBytes }));
  /** Reads and pushes chunks to `reader` until it says stop, then waits for resume(); until the end or an error. */
  const subscribe = (reader: ConnectionReader): { resume(): void } => {
    let resumed: (() => void) | undefined;
    void (async () => {
      for (;;) {
        let chunk: Uint8Array | null;
        try {
          chunk = await readChunk();
        } catch (e) {
          reader.onError(e as Error);
          return;
        }
        if (chunk === null) {
          reader.onEnd();
          return;
        }
        if (!reader.onChunk(chunk)) await new Promise<void>((resolve) => (resumed = resolve));
      }
    })();
    return {
      resume() {
        const r = resumed;
        resumed = undefined;
        r?.();
      },
    };
  };

  const writable = new WritableStream<Uint8Array>({
    async write(chunk) {
      if (closed) throw new FsError("EPIPE", "write", remote, `EPIPE: write to ${remote}: the connection is closed`);
      let done = 0;
      while (done < chunk.length) {
        try {
          done += await conn.write(chunk.subarray(done));
        } catch (err) {
          throw denoFsError(err, "write", remote);
        }
      }
    },
    async close() {
      writeEnded = true;
      if (!closed) {
        try { await conn.closeWrite(); } catch { /* the peer is gone: nothing left to end */ }
      }
      closeIfBothEnded();
    },
    abort() {
      writeEnded = true;
      closeConn();
    },
  });

  return connectionOf({ remote, writable, close: closeConn, recycle: (chunk) => buffers.give(chunk), makeReadable, subscribe });
}

/**
 * Makes way for a unix socket at `path`: a socket file nobody listens on
 * (left by a killed server) is removed; a live one is EADDRINUSE; any other
 * kind of file is EEXIST and never removed.
 */
async function denoListenClearStale(path: string, url: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw denoFsError(err, "lstat", path);
  }
  if (!info.isSocket) throw new FsError("EEXIST", "listen", path, `cannot listen on ${url}: ${path} exists and is not a socket`);
  try {
    const probe = await Deno.connect({ transport: "unix", path });
    probe.close();
  } catch (err) {
    if (err instanceof Deno.errors.ConnectionRefused) {
      denoCall("unlink", path, () => Deno.removeSync(path));
      return;
    }
    throw denoFsError(err, "connect", path);
  }
  throw new FsError("EADDRINUSE", "listen", path, `cannot listen on ${url}: another server is listening there`);
}

async function denoListen(url: string, onConnection: (conn: Connection) => void): Promise<Listener> {
  const address = parseSocketUrl(url, "listen");
  let listener: Deno.Listener;
  let bound: SocketAddress = address;
  if (address.transport === "tcp") {
    listener = denoCall("listen", url, () => Deno.listen({ hostname: address.hostname, port: address.port, transport: "tcp" }));
    bound = { transport: "tcp", hostname: address.hostname, port: (listener.addr as Deno.NetAddr).port };
  } else {
    await denoListenClearStale(address.path, url);
    listener = denoCall("listen", url, () => Deno.listen({ path: address.path, transport: "unix" }));
    // Deno has no stable umask: the socket is made owner-only right after
    // bind, before the first accept below runs.
    denoCall("chmod", address.path, () => Deno.chmodSync(address.path, UNIX_SOCKET_MODE));
  }
  let closing = false;
  const accepting = (async () => {
    for (;;) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (closing) return;
        // BadResource/Interrupted after close; anything else (EMFILE) affects one attempt: keep accepting.
        if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) return;
        continue;
      }
      const peer = conn.remoteAddr;
      // Replies are small frames: without TCP_NODELAY, Nagle holds one back until the
      // peer's delayed ACK (40 ms) whenever an earlier one is unacknowledged.
      if (peer.transport === "tcp") (conn as Deno.TcpConn).setNoDelay(true);
      const remote = peer.transport === "tcp" ? `tcp:${peer.hostname}:${peer.port}` : "unix";
      onConnection(denoConnection(conn, remote));
    }
  })();
  return {
    url: formatSocketUrl(bound),
    async close() {
      if (closing) return;
      closing = true;
      try { listener.close(); } catch { /* already closed */ }
      await accepting;
      // Node removes its unix socket file on close; do the same so both runtimes leave no stale file.
      if (address.transport === "unix") {
        try { Deno.removeSync(address.path); } catch { /* already gone */ }
      }
    },
  };
}

async function denoConnect(url: string): Promise<Connection> {
  const address = parseSocketUrl(url, "connect");
  try {
    if (address.transport === "tcp") {
      const conn = await Deno.connect({ hostname: address.hostname, port: address.port, transport: "tcp" });
      conn.setNoDelay(true);
      return denoConnection(conn, `tcp:${address.hostname}:${address.port}`, true);
    }
    const conn = await Deno.connect({ path: address.path, transport: "unix" });
    return denoConnection(conn, "unix", true);
  } catch (err) {
    throw denoFsError(err, "connect", url);
  }
}

// ---------------------------------------------------------------------------
// The filesystem

/** Throws ENOTDIR/EISDIR as the POSIX call would, since Deno.removeSync takes files and directories alike. */
function denoRemoveExpecting(path: string, kind: "file" | "directory"): void {
  const syscall = kind === "file" ? "unlink" : "rmdir";
  const info = denoCall(syscall, path, () => Deno.lstatSync(path));
  if (kind === "file" && info.isDirectory) throw new FsError("EISDIR", syscall, path, `EISDIR: ${syscall} ${path}: is a directory`);
  if (kind === "directory" && !info.isDirectory) throw new FsError("ENOTDIR", syscall, path, `ENOTDIR: ${syscall} ${path}: not a directory`);
  denoCall(syscall, path, () => Deno.removeSync(path));
}

// ---------------------------------------------------------------------------
// The hash thread

/**
 * A Web Worker that hashes blob pieces (src/hashthread.ts), from a blob:
 * URL of its source, so no file sits beside the module (a `deno compile`
 * binary carries it). It reads the files of pieces given by reference
 * (DenoFile.workerRef), with the read permission it inherits.
 */
function denoHashWorker(): WorkerHashThread {
  const source = `const post = (m) => self.postMessage(m);
const openRef = (path) => Deno.openSync(path, { read: true });
const closeRef = (file) => file.close();
function readAt(file, bytes, position) {
  file.seekSync(position, Deno.SeekMode.Start);
  for (let done = 0; done < bytes.length;) {
    const n = file.readSync(bytes.subarray(done));
    if (n === null || n === 0) throw new Error("segstore hash thread: the file ends at " + (position + done) + ", inside the piece it was given");
    done += n;
  }
}
${HASH_THREAD_HANDLER_SOURCE}
self.onmessage = (e) => handle(e.data);`;
  const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  let worker: Worker;
  try {
    worker = new Worker(url, { type: "module" });
  } catch (e) {
    URL.revokeObjectURL(url);
    throw e;
  }
  // The URL is revoked at the end, not at once: the worker loads its module after this returns.
  const terminate = (): void => {
    worker.terminate();
    URL.revokeObjectURL(url);
  };
  // A live Worker keeps a Deno process running whatever is awaited: nothing to switch (the idle timer stops it).
  const thread = hashThreadOver({ post: (m) => worker.postMessage(m), terminate, keepAlive: () => {} });
  worker.onmessage = (e) => thread.receive(e.data);
  worker.onerror = (e) => {
    e.preventDefault();
    thread.fail(new Error(`segstore: the hash thread failed: ${e.message}`));
  };
  return thread;
}
setHashThreadStarter(() => idleStopping(denoHashWorker, (timer) => Deno.unrefTimer(timer as number)));

/**
 * The Deno filesystem adapter.
 *
 * @example
 * import { denoFs } from "segstore/adapters/deno";
 * const f = denoFs.open("/tmp/x", "w+");
 * f.write(new TextEncoder().encode("hi"), 0); f.datasync(); f.close();
 */
export const denoFs: FileSystem = {
  name: "deno",

  open(path: string, mode: OpenMode): File {
    const file = denoCall("open", path, () => Deno.openSync(path, DENO_OPEN_OPTIONS[mode]));
    return new DenoFile(path, file);
  },

  mkdir(path: string): void {
    denoCall("mkdir", path, () => Deno.mkdirSync(path));
  },

  readdir(path: string): string[] {
    return denoCall("readdir", path, () => Array.from(Deno.readDirSync(path), (entry) => entry.name));
  },

  rename(from: string, to: string): void {
    denoCall("rename", from, () => Deno.renameSync(from, to));
  },

  unlink(path: string): void {
    denoRemoveExpecting(path, "file");
  },

  rmdir(path: string): void {
    denoRemoveExpecting(path, "directory");
  },

  stat(path: string): FileStat | undefined {
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return undefined;
      throw denoFsError(err, "stat", path);
    }
    return {
      size: info.size,
      isFile: info.isFile,
      isDirectory: info.isDirectory,
      mtimeMs: info.mtime?.getTime() ?? 0,
      atimeMs: info.atime?.getTime() ?? 0,
    };
  },

  syncDir(path: string): void {
    const dir = denoCall("open", path, () => Deno.openSync(path, { read: true }));
    try {
      denoCall("fsync", path, () => dir.syncSync());
    } finally {
      dir.close();
    }
  },

  resolve(path: string): string {
    return resolvePath(Deno.cwd(), path);
  },

  listen: denoListen,
  connect: denoConnect,
};
