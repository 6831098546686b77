/**
 * The Node.js adapter: `nodeFs` implements the `FileSystem` contract of
 * `src/fs.ts` over the synchronous `node:fs` calls, flock(2) through the
 * `fs-ext` native addon, and sockets through `node:net`.
 *
 * Map: error mapping (`nodeFsError`) · files (`NodeFile`) · the filesystem
 * (`nodeFs`) · locks (`nodeFlock`, loaded lazily) · sockets (`nodeConnection`,
 * `nodeListen`, `nodeConnect`).
 *
 * Never imported by Deno: `adapters/runtime.ts` picks `adapters/deno.ts` there,
 * so Deno never loads the native addon.
 */
import {
  closeSync, chmodSync, fdatasyncSync, fstatSync, fsyncSync, ftruncateSync, lstatSync, mkdirSync, openSync,
  readdirSync, readSync, renameSync, rmdirSync, statSync, unlinkSync, write as fsWrite, writeSync, fdatasync as fsFdatasync,
} from "node:fs";
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import * as net from "node:net";
import { resolve as pathResolve } from "node:path";
import { assert } from "../src/format.ts";
import { FsError, type Connection, type ConnectionReader, type File, type FileStat, type FileSystem, type Listener, type OpenMode } from "../src/fs.ts";
import { connectionOf } from "./connection.ts";
import { CLIENT_READ_CHUNK_BYTES, CLIENT_READ_QUEUE_BYTES, ReadBuffers, SOCKET_READ_QUEUE_BYTES } from "./read-buffers.ts";
import { formatSocketUrl, parseSocketUrl, type SocketAddress } from "./socket-url.ts";
import { setHashThreadStarter } from "../src/blake3parallel.ts";
import { HASH_THREAD_HANDLER_SOURCE, hashThreadOver, idleStopping, type WorkerHashThread } from "../src/hashthread.ts";

// ---------------------------------------------------------------------------
// Errors

/**
 * The one place a Node error becomes an FsError: `err.code` is already the
 * POSIX name ("ENOENT"...); the message and the original error (as `cause`,
 * with its stack) are kept. Stream errors without an errno code
 * (ERR_STREAM_DESTROYED...) become EPIPE: the peer or we closed the socket.
 */
function nodeFsError(err: unknown, syscall: string, path: string): FsError {
  if (err instanceof FsError) return err;
  const e = err as { code?: unknown; syscall?: unknown; message?: unknown };
  let code = typeof e?.code === "string" ? e.code : "EIO";
  if (code.startsWith("ERR_STREAM")) code = "EPIPE";
  const message = typeof e?.message === "string" ? e.message : String(err);
  const call = typeof e?.syscall === "string" ? e.syscall : syscall;
  return new FsError(code, call, path, message, { cause: err });
}

/** Runs `fn`, turning whatever it throws into an FsError for `syscall` on `path`. */
function nodeCall<T>(syscall: string, path: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw nodeFsError(err, syscall, path);
  }
}

// ---------------------------------------------------------------------------
// Locks

/** fs-ext's flock: throws with `code` EAGAIN/EWOULDBLOCK when a non-blocking lock is held elsewhere. */
type FlockSync = (fd: number, flags: "ex" | "sh" | "exnb" | "shnb" | "un") => void;
let flockLoaded: FlockSync | undefined;

/** Loads fs-ext the first time a lock is taken, so a process that never locks never loads native code. */
function nodeFlock(): FlockSync {
  if (flockLoaded === undefined) {
    const require = createRequire(import.meta.url);
    const fsExt = require("fs-ext") as { flockSync: FlockSync };
    assert(typeof fsExt.flockSync === "function", "fs-ext exports flockSync");
    flockLoaded = fsExt.flockSync;
  }
  return flockLoaded;
}

// ---------------------------------------------------------------------------
// Files

/** fopen-style modes of the contract to Node's flag strings (the same letters). */
const NODE_OPEN_FLAGS: Record<OpenMode, string> = { "r": "r", "r+": "r+", "w+": "w+", "wx+": "wx+" };

class NodeFile implements File {
  #fd: number;
  #closed = false;
  /** A writeAsync is running in the libuv pool: closing the fd under it could let a reused fd number take its bytes. */
  #writing = false;
  /** A datasyncAsync is running in the libuv pool (the same hazard). */
  #syncing = false;

  /** The descriptor: a worker thread reads it with pread, which moves no file offset, so it never disturbs this thread. */
  readonly workerRef: number;

  constructor(readonly path: string, fd: number) {
    this.#fd = fd;
    this.workerRef = fd;
  }

  #open(syscall: string): number {
    if (this.#closed) throw new FsError("EBADF", syscall, this.path, `EBADF: ${syscall} ${this.path}: the file is closed`);
    return this.#fd;
  }

  read(buf: Uint8Array, position: number): number {
    if (!(Number.isSafeInteger(position) && position >= 0)) assert(false, `read position ${position} of ${this.path}`);
    const fd = this.#open("read");
    let done = 0;
    // The OS may return fewer bytes than asked before end of file (signals,
    // pipes, network filesystems); the contract promises short only at EOF.
    // No closure per call here: reads are the hot path of every get.
    while (done < buf.length) {
      let n: number;
      try {
        n = readSync(fd, buf, done, buf.length - done, position + done);
      } catch (err) {
        throw nodeFsError(err, "read", this.path);
      }
      if (n === 0) break;
      done += n;
    }
    assert(done <= buf.length, "read count within the buffer");
    return done;
  }

  write(buf: Uint8Array, position: number): void {
    if (!(Number.isSafeInteger(position) && position >= 0)) assert(false, `write position ${position} of ${this.path}`);
    const fd = this.#open("write");
    let done = 0;
    while (done < buf.length) {
      const n = nodeCall("write", this.path, () => writeSync(fd, buf, done, buf.length - done, position + done));
      if (!(n > 0)) assert(false, `write of ${this.path} made progress`);
      done += n;
    }
  }

  // async: a closed file or a bad position rejects, as every other failure does, instead of throwing at the call.
  async writeAsync(buf: Uint8Array, position: number): Promise<void> {
    if (!(Number.isSafeInteger(position) && position >= 0)) assert(false, `write position ${position} of ${this.path}`);
    assert(!this.#writing, `one writeAsync at a time on ${this.path}`);
    const fd = this.#open("write");
    this.#writing = true;
    try {
      await new Promise<void>((resolve, reject) => {
        let done = 0;
        const step = (): void => {
          fsWrite(fd, buf, done, buf.length - done, position + done, (err, n) => {
            // Inside a libuv callback a throw would be uncaught: failures, the assertion included, reject.
            if (err !== null) return reject(nodeFsError(err, "write", this.path));
            if (!(n > 0)) return reject(new Error(`segstore internal assertion: write of ${this.path} made no progress`));
            done += n;
            if (done < buf.length) step();
            else resolve();
          });
        };
        step();
      });
    } finally {
      this.#writing = false;
    }
  }

  size(): number {
    const fd = this.#open("fstat");
    return nodeCall("fstat", this.path, () => fstatSync(fd).size);
  }

  truncate(length: number): void {
    if (!(Number.isSafeInteger(length) && length >= 0)) assert(false, `truncate length ${length} of ${this.path}`);
    const fd = this.#open("ftruncate");
    nodeCall("ftruncate", this.path, () => ftruncateSync(fd, length));
  }

  datasync(): void {
    const fd = this.#open("fdatasync");
    nodeCall("fdatasync", this.path, () => fdatasyncSync(fd));
  }

  async datasyncAsync(): Promise<void> {
    assert(!this.#syncing, `one datasyncAsync at a time on ${this.path}`);
    const fd = this.#open("fdatasync");
    this.#syncing = true;
    try {
      await new Promise<void>((resolve, reject) => {
        fsFdatasync(fd, (err) => (err ? reject(nodeFsError(err, "fdatasync", this.path)) : resolve()));
      });
    } finally {
      this.#syncing = false;
    }
  }

  sync(): void {
    const fd = this.#open("fsync");
    nodeCall("fsync", this.path, () => fsyncSync(fd));
  }

  close(): void {
    if (this.#closed) return;
    assert(!this.#writing && !this.#syncing, `close of ${this.path} with a writeAsync or datasyncAsync in flight`);
    this.#closed = true;
    nodeCall("close", this.path, () => closeSync(this.#fd));
  }

  lock(mode: "exclusive" | "shared", wait: boolean): boolean {
    const fd = this.#open("flock");
    const flags = mode === "exclusive" ? (wait ? "ex" : "exnb") : (wait ? "sh" : "shnb");
    const flock = nodeFlock();
    for (;;) {
      try {
        flock(fd, flags);
        return true;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (!wait && (code === "EAGAIN" || code === "EWOULDBLOCK")) return false;
        if (code === "EINTR") continue; // a signal interrupted a blocking wait: wait again
        throw nodeFsError(err, "flock", this.path);
      }
    }
  }

  unlock(): void {
    const fd = this.#open("flock");
    nodeCall("flock", this.path, () => nodeFlock()(fd, "un"));
  }
}

// ---------------------------------------------------------------------------
// Sockets

/**
 * Reads of a client socket into buffers of ours (net.connect's `onread`;
 * adapters/read-buffers.ts says why), which the reader gives back through
 * the Connection's recycle(). Sockets a server accepts cannot take
 * `onread`: they read into Node's own buffers.
 */
class SocketReadBuffers {
  readonly #buffers = new ReadBuffers(CLIENT_READ_CHUNK_BYTES, CLIENT_READ_QUEUE_BYTES);
  /** Chunks read before the Connection's stream took over (none, in practice: it is made in the same turn). */
  #early: Uint8Array[] = [];
  #deliver: ((chunk: Uint8Array) => boolean) | undefined;

  /** net.connect's `onread` option. */
  readonly onread = {
    buffer: (): Uint8Array => this.#buffers.take(),
    // Returning false pauses the socket, as socket.pause() does for "data".
    callback: (n: number, buf: Uint8Array): boolean => {
      const chunk = this.#buffers.chunk(buf, n);
      if (this.#deliver !== undefined) return this.#deliver(chunk);
      this.#early.push(chunk);
      return true;
    },
  };

  /** Hands read chunks to `deliver` from now on; it returns false while the reader's queue is full. */
  start(deliver: (chunk: Uint8Array) => boolean): boolean {
    this.#deliver = deliver;
    let more = true;
    for (const chunk of this.#early.splice(0)) more = deliver(chunk);
    return more;
  }

  recycle(chunk: Uint8Array): void {
    this.#buffers.give(chunk);
  }
}

/**
 * Wraps a net.Socket as a Connection of two web streams.
 *
 * - readable: chunks as the socket delivers them (into buffers of ours,
 *   given back by recycle(), when `reads` came with the socket); the socket
 *   is paused while the stream's queue is full (backpressure reaches the
 *   peer through TCP) and resumed when the reader pulls. Ends when the peer
 *   half-closes.
 * - writable: each write resolves once Node has handed the bytes to the
 *   kernel, so a sender that awaits writes reads its source only as fast as
 *   the socket drains, and may reuse its buffer after the promise resolves.
 *   close() half-closes (FIN); the socket is freed once both sides ended.
 */
function nodeConnection(socket: net.Socket, remote: string, reads?: SocketReadBuffers): Connection {
  /** Sends what the socket reads to `reader`; the socket is paused whenever onChunk says so. */
  const attach = (reader: ConnectionReader): void => {
    let ended = false;
    const deliver = (chunk: Uint8Array): boolean => (ended ? true : reader.onChunk(chunk));
    if (reads !== undefined) {
      if (!reads.start(deliver)) socket.pause();
    } else {
      socket.on("data", (chunk: Buffer) => {
        // A plain Uint8Array view (not a Buffer), so consumers see the same type in both runtimes.
        if (!deliver(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength))) socket.pause();
      });
    }
    socket.on("end", () => {
      if (ended) return;
      ended = true;
      reader.onEnd();
    });
    socket.on("error", (err) => {
      if (ended) return;
      ended = true;
      reader.onError(nodeFsError(err, "read", remote));
    });
    socket.on("close", () => {
      // Destroyed locally (close()) without an end from the peer: the reader sees the end.
      if (ended) return;
      ended = true;
      reader.onEnd();
    });
  };
  const makeReadable = (): ReadableStream<Uint8Array> => new ReadableStream<Uint8Array>({
    start(controller) {
      attach({
        onChunk(chunk) {
          controller.enqueue(chunk);
          return (controller.desiredSize ?? 0) > 0;
        },
        onEnd: () => controller.close(),
        onError: (e) => controller.error(e),
      });
    },
    pull() {
      socket.resume();
    },
    cancel() {
      socket.destroy();
    },
  }, new ByteLengthQueuingStrategy({ highWaterMark: reads === undefined ? SOCKET_READ_QUEUE_BYTES : CLIENT_READ_QUEUE_BYTES }));

  const writable = new WritableStream<Uint8Array>({
    write(chunk) {
      return new Promise<void>((resolve, reject) => {
        if (socket.destroyed) {
          reject(new FsError("EPIPE", "write", remote, `EPIPE: write to ${remote}: the connection is closed`));
          return;
        }
        socket.write(chunk, (err) => (err ? reject(nodeFsError(err, "write", remote)) : resolve()));
      });
    },
    close() {
      return new Promise<void>((resolve) => {
        if (socket.destroyed || socket.writableEnded) resolve();
        else socket.end(() => resolve());
      });
    },
    abort() {
      socket.destroy();
    },
  });

  return connectionOf({
    remote,
    writable,
    close: () => void socket.destroy(),
    recycle: reads === undefined ? undefined : (chunk) => reads.recycle(chunk),
    makeReadable,
    subscribe(reader) {
      attach(reader);
      return { resume: () => void socket.resume() };
    },
  });
}

/** "tcp:ADDR:PORT" or "unix" for a socket's peer. */
function nodeRemoteName(socket: net.Socket, address: SocketAddress): string {
  if (address.transport === "unix") return "unix";
  return `tcp:${socket.remoteAddress ?? "?"}:${socket.remotePort ?? "?"}`;
}

/** Connects and resolves once connected, or rejects with an FsError (ECONNREFUSED, ENOENT...); `reads`: read into its buffers. */
function nodeConnectSocket(address: SocketAddress, url: string, reads?: SocketReadBuffers): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const options = address.transport === "tcp"
      ? { host: address.hostname, port: address.port, allowHalfOpen: true, onread: reads?.onread }
      : { path: address.path, allowHalfOpen: true, onread: reads?.onread };
    const socket = net.connect(options);
    const onError = (err: Error) => reject(nodeFsError(err, "connect", url));
    socket.once("error", onError);
    socket.once("connect", () => {
      socket.off("error", onError);
      socket.setNoDelay?.(true);
      resolve(socket);
    });
  });
}

/**
 * Makes way for a unix socket at `path`: a socket file nobody listens on
 * (left by a killed server) is removed; a live one is EADDRINUSE; any other
 * kind of file is EEXIST and never removed.
 */
async function nodeListenClearStale(path: string, url: string): Promise<void> {
  const existing = nodeCall("lstat", path, () => lstatSync(path, { throwIfNoEntry: false }));
  if (existing === undefined) return;
  if (!existing.isSocket()) {
    throw new FsError("EEXIST", "listen", path, `cannot listen on ${url}: ${path} exists and is not a socket`);
  }
  try {
    const probe = await nodeConnectSocket({ transport: "unix", path }, url);
    probe.destroy();
  } catch (err) {
    if (err instanceof FsError && err.code === "ECONNREFUSED") {
      nodeCall("unlink", path, () => unlinkSync(path));
      return;
    }
    throw err;
  }
  throw new FsError("EADDRINUSE", "listen", path, `cannot listen on ${url}: another server is listening there`);
}

/** Unix socket permissions: owner only, so only the store's user can talk to its server. */
const UNIX_SOCKET_MODE = 0o600;

async function nodeListen(url: string, onConnection: (conn: Connection) => void): Promise<Listener> {
  const address = parseSocketUrl(url, "listen");
  if (address.transport === "unix") await nodeListenClearStale(address.path, url);
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.setNoDelay?.(true);
    onConnection(nodeConnection(socket, nodeRemoteName(socket, address)));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(nodeFsError(err, "listen", url)));
    if (address.transport === "tcp") {
      server.listen({ host: address.hostname, port: address.port }, () => resolve());
      return;
    }
    // The socket file is created by bind(), synchronously inside listen():
    // a umask around it creates it owner-only with no window; the chmod
    // below covers threads where umask cannot be set (workers).
    let umaskOld: number | undefined;
    try { umaskOld = process.umask(0o177); } catch { /* worker thread: chmod below */ }
    try {
      server.listen({ path: address.path }, () => resolve());
    } finally {
      if (umaskOld !== undefined) process.umask(umaskOld);
    }
  });
  // Accept errors (EMFILE...) concern one connection attempt; the server keeps listening.
  server.on("error", () => {});
  let bound: SocketAddress = address;
  if (address.transport === "unix") {
    nodeCall("chmod", address.path, () => chmodSync(address.path, UNIX_SOCKET_MODE));
  } else {
    const info = server.address() as net.AddressInfo;
    bound = { transport: "tcp", hostname: address.hostname, port: info.port };
  }
  return {
    url: formatSocketUrl(bound),
    close() {
      // Stops accepting at once (and removes a unix socket file); server.close's
      // callback would wait for open connections, which the contract leaves alone.
      if (server.listening) server.close();
      return Promise.resolve();
    },
  };
}

async function nodeConnect(url: string): Promise<Connection> {
  const address = parseSocketUrl(url, "connect");
  const reads = new SocketReadBuffers();
  const socket = await nodeConnectSocket(address, url, reads);
  return nodeConnection(socket, address.transport === "unix" ? "unix" : `tcp:${address.hostname}:${address.port}`, reads);
}

// ---------------------------------------------------------------------------
// The filesystem

// ---------------------------------------------------------------------------
// The hash thread

/**
 * A worker_threads worker that hashes blob pieces (src/hashthread.ts), from
 * source (eval), so no file sits beside the bundle. It keeps the process
 * alive only while a hasher awaits it.
 */
function nodeHashWorker(): WorkerHashThread {
  const source = `const { parentPort } = require("node:worker_threads");
const { readSync } = require("node:fs");
const post = (m) => parentPort.postMessage(m);
// A file reference is a descriptor this process has open (NodeFile.workerRef): nothing to open or close.
const openRef = (fd) => fd;
const closeRef = () => {};
function readAt(fd, bytes, position) {
  for (let done = 0; done < bytes.length;) {
    const n = readSync(fd, bytes, done, bytes.length - done, position + done);
    if (n === 0) throw new Error("segstore hash thread: the file ends at " + (position + done) + ", inside the piece it was given");
    done += n;
  }
}
${HASH_THREAD_HANDLER_SOURCE}
parentPort.once("message", handle);`;
  const worker = new Worker(source, { eval: true });
  // Listeners first: adding a "message" listener refs the worker's port again, so the unref in
  // hashThreadOver must come after it (else a dropped blob stream held the process for the idle second).
  let thread: WorkerHashThread | undefined;
  worker.on("message", (m) => thread!.receive(m));
  worker.on("error", (e) => thread!.fail(e));
  worker.on("exit", (code) => thread!.fail(new Error(`segstore: the hash thread exited (code ${code})`)));
  thread = hashThreadOver({
    post: (m) => worker.postMessage(m),
    terminate: () => void worker.terminate(),
    keepAlive: (on) => (on ? worker.ref() : worker.unref()),
  });
  return thread;
}
setHashThreadStarter(() => idleStopping(nodeHashWorker, (timer) => (timer as { unref(): void }).unref()));

/**
 * The Node.js filesystem adapter.
 *
 * @example
 * import { nodeFs } from "segstore/adapters/node";
 * const f = nodeFs.open("/tmp/x", "w+");
 * f.write(new TextEncoder().encode("hi"), 0); f.datasync(); f.close();
 */
export const nodeFs: FileSystem = {
  name: "node",

  open(path: string, mode: OpenMode): File {
    const fd = nodeCall("open", path, () => openSync(path, NODE_OPEN_FLAGS[mode]));
    return new NodeFile(path, fd);
  },

  mkdir(path: string): void {
    nodeCall("mkdir", path, () => mkdirSync(path));
  },

  readdir(path: string): string[] {
    return nodeCall("readdir", path, () => readdirSync(path));
  },

  rename(from: string, to: string): void {
    nodeCall("rename", from, () => renameSync(from, to));
  },

  unlink(path: string): void {
    nodeCall("unlink", path, () => unlinkSync(path));
  },

  rmdir(path: string): void {
    nodeCall("rmdir", path, () => rmdirSync(path));
  },

  stat(path: string): FileStat | undefined {
    // throwIfNoEntry: false gives undefined for ENOENT only; ENOTDIR (a file where a directory
    // was expected) still throws, in every adapter.
    const st = nodeCall("stat", path, () => statSync(path, { throwIfNoEntry: false }));
    if (st === undefined) return undefined;
    return { size: st.size, isFile: st.isFile(), isDirectory: st.isDirectory(), mtimeMs: st.mtimeMs, atimeMs: st.atimeMs };
  },

  syncDir(path: string): void {
    const fd = nodeCall("open", path, () => openSync(path, "r"));
    try {
      nodeCall("fsync", path, () => fsyncSync(fd));
    } finally {
      closeSync(fd);
    }
  },

  resolve(path: string): string {
    return pathResolve(path);
  },

  listen: nodeListen,
  connect: nodeConnect,
};
