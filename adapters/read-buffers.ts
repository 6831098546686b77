/**
 * The buffers a socket is read into, and how much a connection's reads
 * queue: one policy for the Node and Deno adapters; runtime-neutral.
 *
 * A read goes into a buffer of ours, taken from the spares that readers
 * gave back (Connection.recycle) or made fresh, and is handed on as a view
 * of it: a blob transfer goes round a few buffers instead of allocating
 * one per read (Node's own reads allocate a new 64 KiB buffer each, 16,384
 * per GiB, and the garbage collections they bring cost about a tenth of a
 * download's CPU on two cores, by perf). A small read is copied out and
 * its buffer kept for the next read at once: a message that keeps a view
 * of its bytes would otherwise pin the whole buffer, and the next read
 * allocate one (with 256 KiB buffers that cost W7's clients, whose reads
 * are a few hundred bytes, 35% of their commits/s).
 */

/** Bytes a server connection's reads queue before the socket is paused (enough to keep a 64 KiB-chunk consumer busy). */
export const SOCKET_READ_QUEUE_BYTES = 256 * 1024;
/** Size of each read of a server connection (Deno's; Node reads accepted sockets into its own 64 KiB buffers). */
export const SOCKET_READ_CHUNK_BYTES = 64 * 1024;
/**
 * A client connection's reads and queue: four times a server
 * connection's. Every chunk costs a turn through the stream and the frame
 * reader, and 256 KiB reads made a 1 GiB download 16% faster than 64 KiB
 * ones (a probe, 6 runs each; 1 MiB gained nothing more). A client has
 * one connection, so the memory is bounded.
 */
export const CLIENT_READ_CHUNK_BYTES = 4 * SOCKET_READ_CHUNK_BYTES;
export const CLIENT_READ_QUEUE_BYTES = 4 * SOCKET_READ_QUEUE_BYTES;
/** A read of less than this fraction of its buffer is copied out, and the buffer reused at once. */
const SMALL_READ_FRACTION = 4;

/**
 * The read buffers of one connection: reads of `size` bytes, and as many
 * spares as its queue holds plus the one being read into.
 *
 * @example
 * const buffers = new ReadBuffers(CLIENT_READ_CHUNK_BYTES, CLIENT_READ_QUEUE_BYTES);
 * const buf = buffers.take(); const n = readInto(buf); enqueue(buffers.chunk(buf, n)); // later: buffers.give(chunk)
 */
export class ReadBuffers {
  readonly #spare: ArrayBuffer[] = [];
  readonly #own = new WeakSet<ArrayBufferLike>();
  readonly #spareMax: number;

  constructor(readonly size: number, queueBytes: number) {
    this.#spareMax = queueBytes / size + 1;
  }

  /** A buffer to read into: a spare, or a new one. */
  take(): Uint8Array {
    const spare = this.#spare.pop();
    if (spare !== undefined) return new Uint8Array(spare);
    const fresh = new Uint8Array(this.size);
    this.#own.add(fresh.buffer);
    return fresh;
  }

  /** What to hand on for `n` bytes read into `buf` (from take): a view, or for a small read a copy, `buf` then a spare again. */
  chunk(buf: Uint8Array, n: number): Uint8Array {
    if (n * SMALL_READ_FRACTION >= this.size) return new Uint8Array(buf.buffer, buf.byteOffset, n);
    this.give(buf);
    return buf.slice(0, n);
  }

  /** Takes back a chunk handed on, once its reader keeps no reference into it; ignores chunks not of these buffers. */
  give(chunk: Uint8Array): void {
    if (this.#own.has(chunk.buffer) && this.#spare.length < this.#spareMax) this.#spare.push(chunk.buffer as ArrayBuffer);
  }
}
