/**
 * A framed message channel over one socket connection (a `Connection` from
 * the adapter: its reads pushed through `subscribe` where it offers that,
 * as the Node adapter does, else its web streams), used by the server and
 * the client alike.
 *
 * Map: `Channel` (reading: frames → msgpack → `onMessage`; writing: small
 * messages batched into one socket write per turn of the event loop, big
 * frames written as they are; backpressure both ways; closing).
 *
 * Backpressure:
 * - Reading: `onMessage` may return a promise; the channel reads nothing
 *   more (and the adapter stops reading the socket once its queue is full)
 *   until it settles. The server uses this to stop a client that has too
 *   many calls in flight or too much unread output.
 * - Writing: `queuedBytes` counts what is queued but not yet handed to the
 *   kernel; `whenDrained()` resolves once it falls under
 *   OUTPUT_LOW_WATER_BYTES; `sendFrame()` resolves once its frame is
 *   written, so a blob sender reads its source only as the socket drains.
 */
import type { Connection } from "../fs.ts";
import { assert } from "../format.ts";
import {
  type Codec, createCodec, decodePayload, FRAME_HEADER_SIZE, FRAME_SIZE_MAX, FrameReader, protocolError, writeFrameHeader,
} from "./protocol.ts";

/**
 * Bytes of small messages gathered into one socket write: many replies to
 * pipelined calls leave in one write instead of one each.
 */
export const BATCH_BYTES = 64 * 1024;
/** A message bigger than this skips the batch and is written on its own. */
const BATCH_MESSAGE_MAX = BATCH_BYTES / 4;
/** Batch buffers kept for reuse once written (each BATCH_BYTES). */
const BATCH_POOL_MAX = 4;
/** `whenDrained()` resolves once queued output falls to this many bytes. */
export const OUTPUT_LOW_WATER_BYTES = 1024 * 1024;
/** Queued output above which a sender should wait for `whenDrained()` (the server stops reading such a client). */
export const OUTPUT_HIGH_WATER_BYTES = 8 * 1024 * 1024;

/** What the owner of a channel hears. */
export interface ChannelHandlers {
  /**
   * One decoded message. Byte strings in it are views into a socket
   * buffer: copy what you keep. Return a promise to pause reading until it
   * settles.
   */
  onMessage(value: unknown): void | Promise<void>;
  /** The peer half-closed (sent all it will); default: `end()` at once. */
  onReadEnd?(): void;
  /** A frame or msgpack error while reading; the channel then flushes what is queued and closes. */
  onReadError?(error: Error): void;
  /** Called once when the channel has closed: `error` is undefined for a clean end by either side. */
  onClose(error: Error | undefined): void;
}

interface Outgoing {
  buf: Uint8Array;
  /** The pooled batch buffer `buf` is a view of, returned to the pool once written. */
  pooled?: Uint8Array;
  done?: () => void;
  fail?: (e: Error) => void;
}

/**
 * A connection speaking segstore frames.
 *
 * @example
 * const ch = new Channel(conn, { onMessage: (m) => console.log(m), onClose: () => {} });
 * ch.start();
 * ch.send([1, "get", [id]]);
 */
export class Channel {
  readonly remote: string;
  readonly codec: Codec;
  #conn: Connection;
  #handlers: ChannelHandlers;
  #frames: FrameReader;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #batch: Uint8Array | undefined;
  #batchPos = 0;
  #flushScheduled = false;
  #pool: Uint8Array[] = [];
  #queue: Outgoing[] = [];
  #queuedBytes = 0;
  #queuedPeak = 0;
  #pumping = false;
  #drainWaiters: (() => void)[] = [];
  #closed = false;
  #closeError: Error | undefined;
  #ending = false;
  #frameSizeMax: number;
  /** Set by consumed() for the message being handled. */
  #consumed = false;
  /** The payload of the message being handled (for consumedLater). */
  #payload: Uint8Array | undefined;
  /** Pushed reads (Connection.subscribe): the subscription, and what waits while a handler has paused reading. */
  #subscription: { resume(): void } | undefined;
  #paused = false;
  /** Chunks that came while paused (the connection stops reading, but one may be on its way), and an end. */
  #held: Uint8Array[] = [];
  #endHeld = false;
  /** Reading failed: no more messages are handed on (what the connection still delivers is dropped). */
  #stopped = false;

  constructor(conn: Connection, handlers: ChannelHandlers, frameSizeMax: number = FRAME_SIZE_MAX) {
    this.#conn = conn;
    this.remote = conn.remote;
    this.#handlers = handlers;
    this.#frameSizeMax = frameSizeMax;
    this.#frames = new FrameReader(frameSizeMax);
    this.codec = createCodec(frameSizeMax);
    this.#writer = conn.writable.getWriter();
    // A write that fails closes the channel through #pump; keep the writer's own rejection from going unhandled.
    this.#writer.closed.catch(() => {});
  }

  /**
   * Starts reading. Call once the handlers are ready for messages. Reads
   * pushed by the connection (`subscribe`) where it offers that, from its
   * `readable` otherwise; the same messages, pauses and ends either way.
   */
  start(): void {
    if (this.#conn.subscribe === undefined) {
      void this.#readLoop();
      return;
    }
    this.#subscription = this.#conn.subscribe({
      onChunk: (chunk) => this.#onChunk(chunk),
      onEnd: () => this.#onEnd(),
      onError: (e) => this.#readFailed(e),
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes queued for the socket and not yet written. */
  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  /** The most bytes ever queued at once (what this connection's output has cost in memory at its worst). */
  get queuedPeak(): number {
    return this.#queuedPeak;
  }

  /** Resolves once queued output has fallen to OUTPUT_LOW_WATER_BYTES (at once if it is there already, or closed). */
  whenDrained(): Promise<void> {
    if (this.#queuedBytes <= OUTPUT_LOW_WATER_BYTES || this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.push(resolve));
  }

  /**
   * Queues one message (encoded now, so the caller may reuse what it
   * passed). Dropped silently once the channel is closed: the owner learns
   * of the close through `onClose`.
   */
  send(message: unknown): void {
    if (this.#closed || this.#ending) return;
    const bytes = this.codec.encoder.encodeSharedRef(message);
    if (bytes.length > this.#frameSizeMax) {
      throw new RangeError(`segstore protocol: a message of ${bytes.length} bytes is over the frame limit of ${this.#frameSizeMax}`);
    }
    const n = FRAME_HEADER_SIZE + bytes.length;
    if (bytes.length > BATCH_MESSAGE_MAX) {
      this.#flushBatch();
      const frame = new Uint8Array(n);
      writeFrameHeader(frame, 0, bytes.length);
      frame.set(bytes, FRAME_HEADER_SIZE);
      this.#enqueue({ buf: frame });
      return;
    }
    if (this.#batch === undefined || this.#batchPos + n > this.#batch.length) {
      this.#flushBatch();
      this.#batch = this.#pool.pop() ?? new Uint8Array(BATCH_BYTES);
      this.#batchPos = 0;
    }
    writeFrameHeader(this.#batch, this.#batchPos, bytes.length);
    this.#batch.set(bytes, this.#batchPos + FRAME_HEADER_SIZE);
    this.#batchPos += n;
    this.#queued(n);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => {
        this.#flushScheduled = false;
        this.#flushBatch();
      });
    }
  }

  /**
   * Queues a frame built by the caller (length prefix included: see
   * `writeChunkHeader`), after everything sent before it. Resolves once it
   * has been handed to the kernel, when `frame` may be reused; rejects if
   * the channel closes first.
   */
  sendFrame(frame: Uint8Array): Promise<void> {
    if (this.#closed || this.#ending) return Promise.reject(this.#closedError());
    this.#flushBatch();
    return new Promise((resolve, reject) => this.#enqueue({ buf: frame, done: resolve, fail: reject }));
  }

  /**
   * Like `sendFrame`, for a frame in two parts (a header the caller built,
   * then its payload as it is): written back to back, nothing between them,
   * so a big payload goes out without being copied behind its header.
   * Resolves once both are handed to the kernel, when both may be reused.
   */
  sendFrameParts(header: Uint8Array, payload: Uint8Array): Promise<void> {
    if (this.#closed || this.#ending) return Promise.reject(this.#closedError());
    this.#flushBatch();
    // Queued in one go: nothing else is queued between the two (a send() now waits behind both).
    this.#enqueue({ buf: header });
    return new Promise((resolve, reject) => this.#enqueue({ buf: payload, done: resolve, fail: reject }));
  }

  /**
   * Says, during `onMessage` (or before the promise it returned settles),
   * that nothing of the current message's bytes is kept: its frame buffer
   * may be reused for the next one.
   */
  consumed(): void {
    this.#consumed = true;
  }

  /**
   * Like `consumed`, for a handler that keeps the message's bytes past its
   * return (a blob chunk still being written): the channel goes on reading
   * into another buffer, and the returned function, called once the bytes
   * are no longer needed, gives the frame buffer back for reuse. Call it
   * once; not calling it only costs a fresh buffer.
   *
   * @example
   * const release = channel.consumedLater();
   * file.writeAsync(chunk, at).finally(release);
   */
  consumedLater(): () => void {
    const payload = this.#payload;
    assert(payload !== undefined, "consumedLater is called while a message is handled");
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#frames.recycle(payload);
    };
  }

  /** Writes what is queued, then closes. Messages sent after this are dropped. */
  async end(): Promise<void> {
    if (this.#closed || this.#ending) return;
    this.#flushBatch();
    this.#ending = true;
    if (this.#queue.length > 0 || this.#pumping) {
      await new Promise<void>((resolve) => this.#drainWaiters.push(resolve));
      while (this.#queue.length > 0 && !this.#closed) await new Promise<void>((resolve) => this.#drainWaiters.push(resolve));
    }
    this.close();
  }

  /** Closes both directions now; queued output is dropped. Idempotent. */
  close(error?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeError = error;
    try {
      this.#conn.close();
    } catch {
      // already closed by the peer
    }
    const pending = this.#queue.splice(0);
    this.#queuedBytes = 0;
    for (const item of pending) item.fail?.(this.#closedError());
    for (const w of this.#drainWaiters.splice(0)) w();
    this.#handlers.onClose(error);
  }

  #closedError(): Error {
    return new Error(`connection ${this.remote} is closed${this.#closeError ? `: ${this.#closeError.message}` : ""}`);
  }

  /** Counts `n` more bytes queued, keeping the peak where the count grows. */
  #queued(n: number): void {
    this.#queuedBytes += n;
    if (this.#queuedBytes > this.#queuedPeak) this.#queuedPeak = this.#queuedBytes;
  }

  #flushBatch(): void {
    if (this.#batch === undefined || this.#batchPos === 0) return;
    const batch = this.#batch;
    const used = this.#batchPos;
    this.#batch = undefined;
    this.#batchPos = 0;
    // Already counted in #queuedBytes by send().
    this.#queue.push({ buf: batch.subarray(0, used), pooled: batch });
    this.#startPump();
  }

  #enqueue(item: Outgoing): void {
    this.#queued(item.buf.length);
    this.#queue.push(item);
    this.#startPump();
  }

  #startPump(): void {
    if (this.#pumping || this.#closed) return;
    this.#pumping = true;
    void this.#pump();
  }

  async #pump(): Promise<void> {
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        const item = this.#queue[0]!;
        try {
          await this.#writer.write(item.buf);
        } catch (e) {
          this.close(e instanceof Error ? e : new Error(String(e)));
          return;
        }
        // Closed while that write was in flight: close() already dropped the queue and its count.
        if (this.#closed) return;
        this.#queue.shift();
        this.#queuedBytes -= item.buf.length;
        assert(this.#queuedBytes >= 0, "queued output bytes stay non-negative");
        if (item.pooled !== undefined && this.#pool.length < BATCH_POOL_MAX) this.#pool.push(item.pooled);
        item.done?.();
        if (this.#queuedBytes <= OUTPUT_LOW_WATER_BYTES && this.#drainWaiters.length > 0) {
          for (const w of this.#drainWaiters.splice(0)) w();
        }
      }
    } finally {
      this.#pumping = false;
    }
    if (this.#drainWaiters.length > 0 && this.#queue.length === 0) for (const w of this.#drainWaiters.splice(0)) w();
  }

  // Pushed reads: #onChunk hands each chunk's messages on as #readLoop does, and when a handler returns a
  // promise, stops reading (returns false) until it settles, then goes on with the chunk's next message.

  #onChunk(chunk: Uint8Array): boolean {
    if (this.#closed || this.#stopped) return false;
    if (this.#paused) {
      this.#held.push(chunk);
      return false;
    }
    let payloads: Uint8Array[];
    try {
      payloads = this.#frames.push(chunk);
    } catch (e) {
      this.#readFailed(e);
      return false;
    }
    return this.#deliver({ chunk, payloads, next: 0, keptView: false });
  }

  /** Hands on the chunk's messages from `at.next`; false if reading stopped (paused by a handler, failed, closed). */
  #deliver(at: { chunk: Uint8Array; payloads: Uint8Array[]; next: number; keptView: boolean }): boolean {
    while (at.next < at.payloads.length) {
      const payload = at.payloads[at.next++]!;
      let pause: void | Promise<void>;
      try {
        const message = decodePayload(this.codec, payload);
        this.#consumed = false;
        this.#payload = payload;
        pause = this.#handlers.onMessage(message);
      } catch (e) {
        this.#payload = undefined;
        this.#readFailed(e);
        return false;
      }
      if (pause !== undefined) {
        this.#paused = true;
        pause.then(() => {
          if (this.#handled(at, payload) && this.#deliver(at)) this.#resume();
        }, (e) => {
          this.#payload = undefined;
          this.#readFailed(e);
        });
        return false;
      }
      if (!this.#handled(at, payload)) return false;
    }
    // Payloads of whole frames are views into the chunk: it goes back to the adapter only if each was consumed.
    if (!at.keptView) this.#conn.recycle?.(at.chunk);
    return true;
  }

  /** After a message was handled: recycles its frame if consumed; false if the channel closed meanwhile. */
  #handled(at: { chunk: Uint8Array; keptView: boolean }, payload: Uint8Array): boolean {
    this.#payload = undefined;
    if (this.#closed || this.#stopped) return false;
    if (this.#consumed) this.#frames.recycle(payload);
    else if (payload.buffer === at.chunk.buffer) at.keptView = true;
    return true;
  }

  /** A handler's pause is over: the chunks held meanwhile, then the end or more reading. */
  #resume(): void {
    this.#paused = false;
    while (this.#held.length > 0) {
      if (!this.#onChunk(this.#held.shift()!)) return;
    }
    if (this.#endHeld) {
      this.#endHeld = false;
      this.#onEnd();
      return;
    }
    if (!this.#closed) this.#subscription!.resume();
  }

  #onEnd(): void {
    if (this.#closed || this.#stopped) return;
    if (this.#paused) {
      this.#endHeld = true;
      return;
    }
    if (!this.#frames.idle) {
      this.#readFailed(protocolError(`connection ${this.remote} ended in the middle of a frame`));
      return;
    }
    // The peer half-closed: the owner answers what is in flight, then ends the channel.
    if (this.#handlers.onReadEnd !== undefined) this.#handlers.onReadEnd();
    else void this.end();
  }

  /** Reading failed: a bad frame is answered and the channel ended; anything else closes it. Reading stops either way. */
  #readFailed(e: unknown): void {
    if (this.#closed || this.#stopped) return;
    this.#stopped = true;
    const error = e instanceof Error ? e : new Error(String(e));
    if ((error as { code?: string }).code === "EPROTOCOL") {
      this.#handlers.onReadError?.(error);
      void this.end();
      return;
    }
    this.close(error);
  }

  async #readLoop(): Promise<void> {
    const reader = this.#conn.readable.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.#closed) break;
        const payloads = this.#frames.push(value);
        // Payloads of whole frames are views into `value`: its buffer goes back to the adapter only if each was consumed.
        let keptView = false;
        for (const payload of payloads) {
          const message = decodePayload(this.codec, payload);
          this.#consumed = false;
          this.#payload = payload;
          const pause = this.#handlers.onMessage(message);
          if (pause !== undefined) await pause;
          this.#payload = undefined;
          if (this.#closed) return;
          if (this.#consumed) this.#frames.recycle(payload);
          else if (payload.buffer === value.buffer) keptView = true;
        }
        if (!keptView) this.#conn.recycle?.(value);
      }
      this.#onEnd();
    } catch (e) {
      this.#readFailed(e);
    } finally {
      try {
        reader.releaseLock();
      } catch {
        // a pending read after close: nothing to release
      }
    }
  }
}
