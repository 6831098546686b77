/**
 * segstore: a crash-safe, transactional, log-structured object store for
 * Node.js and Deno.
 *
 * @example
 * import { contentId, open } from "segstore";
 * const store = open("./data", { create: true });
 * const id = await contentId(new TextEncoder().encode("hello"));
 * store.put(id, new TextEncoder().encode("hello"));
 * store.commit();
 * store.close();
 */
import { runtimeFs } from "./adapters/runtime.ts";
import { Store, type OpenOptions } from "./src/store.ts";

export { Store, idHex } from "./src/store.ts";
export type { OpenOptions, StoreStats, CompactResult, CompactOptions } from "./src/store.ts";
export {
  ConflictError, IntegrityError, LockedError, NotFoundError, SegstoreError, StateError, StorageError, StoreFormatError,
  MAX_OBJECT_SIZE, KEY_SIZE,
} from "./src/format.ts";
export { FsError } from "./src/fs.ts";
export { contentId } from "./src/contentid.ts";
export type { ContentSource } from "./src/contentid.ts";
export type { BlobInfo, BlobPathSource, BlobSource, OpenBlobOptions } from "./src/blobs.ts";
export type { CheckOptions, CheckPathOptions, CheckProblem, CheckProblemKind, CheckReport } from "./src/check.ts";
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

export type { ConnectOptions, RemoteStore } from "./src/net/client.ts";
export type { ServeOptions, ServerHandle, ServerStats } from "./src/net/server.ts";

/**
 * Connects to a segstore server (`segstore serve`, or `serve()`) at `url`
 * ("tcp://HOST:PORT" or "unix:/path") and returns a RemoteStore: the
 * methods of Store, async. The network code is loaded on first use, so
 * programs that only `open()` never load it.
 *
 * @example
 * const remote = await connect("tcp://127.0.0.1:7070", { token, cacheDir: "/var/cache/segstore" });
 * await remote.put(id, bytes);
 * await remote.commit();
 * await remote.close();
 */
export async function connect(
  url: string,
  options: import("./src/net/client.ts").ConnectOptions = {},
): Promise<import("./src/net/client.ts").RemoteStore> {
  const client = await import("./src/net/client.ts");
  return client.connect(url, { ...options, fs: options.fs ?? runtimeFs });
}

/**
 * Serves an open store to clients at `options.listen` ("tcp://HOST:PORT",
 * which needs `options.token`, or "unix:/path"). The store stays the
 * caller's: close the server, then the store.
 *
 * @example
 * const store = open("./data", { create: true });
 * const server = await serve(store, { listen: "unix:/tmp/segstore.sock" });
 * // ...
 * await server.close();
 * store.close();
 */
export async function serve(
  store: Store,
  options: import("./src/net/server.ts").ServeOptions,
): Promise<import("./src/net/server.ts").ServerHandle> {
  const server = await import("./src/net/server.ts");
  return server.serve(store, options);
}

/**
 * Checks (and with `{ repair: true }` salvages) the store at `path` without
 * opening it as `open` does, so a store too damaged to open can still be
 * checked and repaired: what `segstore check PATH [--repair]` runs. Takes
 * the store's lock (shared, or exclusive to repair) with the runtime's
 * adapter unless `options.fs` gives another. check.ts is loaded on first
 * use.
 *
 * @example
 * const report = await checkPath("./data", { repair: true });
 * if (report.lost.length > 0) console.error("lost:", report.lost);
 */
export async function checkPath(
  path: string,
  options: Partial<import("./src/check.ts").CheckPathOptions> = {},
): Promise<import("./src/check.ts").CheckReport> {
  const check = await import("./src/check.ts");
  return await check.checkPath(path, { ...options, fs: options.fs ?? runtimeFs });
}
