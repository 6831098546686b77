/**
 * How every command opens a store: through `open()` of mod.ts with the
 * runtime's adapter, read-only (a shared lock, so many readers run at once)
 * unless the command writes, and closed on every path out of the command.
 */
import { open } from "../../mod.ts";
import { NotFoundError } from "../format.ts";
import type { Store } from "../store.ts";
import type { CliIo } from "./io.ts";

/** How a command wants the store. */
export interface CliOpenOptions {
  /** Take the shared lock and never write (get, list, info, check). Default false. */
  readOnly?: boolean;
  /** Create the store if it does not exist (init, demo). Default false. */
  create?: boolean;
  /** At create only: the segment size before rolling to a new segment. Default: open()'s. */
  maxSegmentSize?: number;
}

/**
 * Opens the store at `path` for a command. A missing store gets a message
 * that says how to make one, in the CLI's words rather than the API's.
 *
 * @example
 * const store = openForCli(io, "./store", { readOnly: true });
 */
export function openForCli(io: CliIo, path: string, options: CliOpenOptions = {}): Store {
  if (!options.create && io.fs.stat(path) === undefined) {
    throw new NotFoundError(`cannot open store ${path}: no such directory (create one with: segstore init ${path})`, { store: path });
  }
  const { readOnly = false, create = false, maxSegmentSize } = options;
  return open(path, maxSegmentSize === undefined ? { fs: io.fs, readOnly, create } : { fs: io.fs, readOnly, create, maxSegmentSize });
}

/**
 * Runs `body` with the store open, and closes it however `body` ends (a
 * write that was not committed is rolled back by close).
 *
 * @example
 * await withStore(io, "./store", { readOnly: true }, (store) => store.stats());
 */
export async function withStore<T>(io: CliIo, path: string, options: CliOpenOptions, body: (store: Store) => T | Promise<T>): Promise<T> {
  const store = openForCli(io, path, options);
  let result: T;
  try {
    result = await body(store);
  } catch (e) {
    try {
      store.close();
    } catch {
      // the first error is the one to report
    }
    throw e;
  }
  store.close();
  return result;
}
