/**
 * Content ids: the BLAKE3-256 digest of some bytes, a 32-byte id for
 * content-addressed use (the same id for the same bytes, in every process
 * and runtime). The same hash blobs carry in their BLOB record, so a blob
 * stored under `await contentId(stream)` is stored under its own hash.
 *
 * hash-wasm's BLAKE3 is WebAssembly, created asynchronously; one hasher per
 * call, so concurrent calls never share state. hash-wasm is imported on
 * first use: its module holds every algorithm it offers (270 KB of
 * JavaScript, 40 ms of a Node start on a slow machine), and a process that
 * opens a store to read values never hashes.
 */
import type { IHasher } from "hash-wasm";
import { BLOB_HASH_SIZE } from "./format.ts";

let hashWasm: Promise<typeof import("hash-wasm")> | undefined;

/** A fresh BLAKE3-256 hasher, initialised (hash-wasm's `createBLAKE3`, loaded on first call). */
export async function createBlake3(): Promise<IHasher> {
  hashWasm ??= import("hash-wasm");
  return await (await hashWasm).createBLAKE3(BLOB_HASH_SIZE * 8);
}

/** What `contentId` takes: bytes in memory, or a stream of chunks read one at a time. */
export type ContentSource = Uint8Array | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

/** A fresh BLAKE3-256 hasher, ready for `update`. */
export async function createContentHasher(): Promise<IHasher> {
  const hasher = await createBlake3();
  hasher.init();
  return hasher;
}

/** The 32-byte digest of a hasher, checked. */
export function contentHasherDigest(hasher: IHasher): Uint8Array {
  const digest = hasher.digest("binary");
  if (digest.length !== BLOB_HASH_SIZE) throw new Error(`segstore internal assertion: BLAKE3 digest of ${digest.length} bytes`);
  return digest;
}

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
  const hasher = await createContentHasher();
  if (source instanceof Uint8Array) {
    hasher.update(source);
    return contentHasherDigest(hasher);
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
    return contentHasherDigest(hasher);
  }
  if (source !== null && typeof source === "object" && Symbol.asyncIterator in source) {
    for await (const chunk of source) hasher.update(chunkCheck(chunk));
    return contentHasherDigest(hasher);
  }
  throw new TypeError(`contentId: expected a Uint8Array, a ReadableStream or an AsyncIterable of Uint8Array, got ${source === null ? "null" : typeof source}`);
}
