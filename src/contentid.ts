/**
 * Content ids: the BLAKE3-256 digest of some bytes, a 32-byte id for
 * content-addressed use (the same id for the same bytes, in every process
 * and runtime). The same hash blobs carry in their BLOB record, so a blob
 * stored under `await contentId(stream)` is stored under its own hash.
 *
 * The hasher is ours (src/blake3.ts, SIMD WebAssembly); each call takes its
 * own, so concurrent calls never share state.
 */
import { Blake3 } from "./blake3.ts";

/** What `contentId` takes: bytes in memory, or a stream of chunks read one at a time. */
export type ContentSource = Uint8Array | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

/**
 * The BLAKE3-256 id (32 bytes) of `source`: a Uint8Array, or a
 * ReadableStream / AsyncIterable of Uint8Array chunks, consumed to its end
 * one chunk at a time (never held whole in memory). A chunk that is not a
 * Uint8Array gives a TypeError; an error of the stream is passed on as is.
 *
 * @example
 * const id = await contentId(new TextEncoder().encode("hello"));
 * store.put(id, bytes);
 * const blobId = await contentId(someReadableStream); // then putBlob with a second stream of the same bytes
 */
export async function contentId(source: ContentSource): Promise<Uint8Array> {
  const hasher = Blake3.create();
  try {
    return await contentIdWith(hasher, source);
  } finally {
    hasher.release();
  }
}

async function contentIdWith(hasher: Blake3, source: ContentSource): Promise<Uint8Array> {
  if (source instanceof Uint8Array) {
    hasher.update(source);
    return hasher.digest();
  }
  const chunkCheck = (chunk: unknown): Uint8Array => {
    if (!(chunk instanceof Uint8Array)) throw new TypeError(`contentId: stream chunks must be Uint8Array, got ${chunk === null ? "null" : typeof chunk}`);
    return chunk;
  };
  if (typeof (source as ReadableStream<Uint8Array>)?.getReader === "function") {
    const reader = (source as ReadableStream<Uint8Array>).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        hasher.update(chunkCheck(value));
      }
    } catch (e) {
      reader.cancel(e).catch(() => {}); // stop the producer; the error we report is `e`
      throw e;
    } finally {
      reader.releaseLock();
    }
    return hasher.digest();
  }
  if (source !== null && typeof source === "object" && Symbol.asyncIterator in source) {
    for await (const chunk of source) hasher.update(chunkCheck(chunk));
    return hasher.digest();
  }
  throw new TypeError(`contentId: expected a Uint8Array, a ReadableStream or an AsyncIterable of Uint8Array, got ${source === null ? "null" : typeof source}`);
}
