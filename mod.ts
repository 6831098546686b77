/**
 * segstore: a crash-safe, transactional, log-structured object store for
 * Node.js and Deno.
 *
 * @example
 * import { open } from "segstore";
 * const store = open("./data", { create: true });
 * const id = await contentId(new TextEncoder().encode("hello"));
 * store.put(id, new TextEncoder().encode("hello"));
 * store.commit();
 * store.close();
 */
import { runtimeFs } from "./adapters/runtime.ts";
import { Store, type OpenOptions } from "./src/store.ts";

export { Store, idHex } from "./src/store.ts";
export type { OpenOptions, StoreStats, CompactResult } from "./src/store.ts";
export {
  ConflictError, IntegrityError, LockedError, NotFoundError, SegstoreError, StateError, StorageError, StoreFormatError,
  MAX_OBJECT_SIZE, KEY_SIZE,
} from "./src/format.ts";
export { FsError } from "./src/fs.ts";
export { contentId } from "./src/contentid.ts";
export type { BlobInfo, BlobPathSource, BlobSource, OpenBlobOptions } from "./src/blobs.ts";
export type { FileSystem, File } from "./src/fs.ts";

/**
 * Opens (or with `{ create: true }` creates) the store in the directory
 * `path`, using the runtime's filesystem adapter unless `options.fs` gives
 * another. See `OpenOptions` for every option and its default.
 *
 * @example
 * const store = open("./data", { create: true });
 * store.put(id, bytes);
 * store.commit();
 */
export function open(path: string, options: OpenOptions = {}): Store {
  return Store.open(path, { ...options, fs: options.fs ?? runtimeFs });
}
