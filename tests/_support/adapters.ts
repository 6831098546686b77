/**
 * Test helper: the adapters a suite runs against, so one suite covers the
 * runtime's real filesystem and the faulty in-memory one (as lmdb-js runs
 * `basicTests(options)` per backend). Each call gives fresh, empty roots.
 *
 * @example
 * import { adapterCases } from "./_support/adapters.ts";
 * for (const c of adapterCases()) {
 *   test(`${c.name}: open() creates a store`, () => {
 *     try { open(c.root + "/store", { create: true, fs: c.fs }).close(); } finally { c.cleanup(); }
 *   });
 * }
 *
 * Cases made at module level are shared by the tests that use them; call
 * `adapterCases()` inside a test (or `before.each`) for isolation.
 */
import { runtimeFs } from "../../adapters/runtime.ts";
import { FaultyFs } from "../../adapters/faulty.ts";
import type { FileSystem } from "../../src/fs.ts";
import { tempDir } from "./tempdir.ts";

/** One adapter with an empty directory to work in. */
export type AdapterCase =
  | {
    /** The runtime's adapter: "node" under Node, "deno" under Deno. */
    name: "node" | "deno";
    fs: FileSystem;
    /** An empty directory under os.tmpdir(). */
    root: string;
    /** Removes root recursively. */
    cleanup(): void;
  }
  | {
    name: "faulty";
    /** A new FaultyFs (seed as given) holding only root. */
    fs: FaultyFs;
    /** "/root": empty, its entry durable (synced), so a crash keeps it. */
    root: string;
    /** Nothing to remove: the FaultyFs is garbage once dropped. */
    cleanup(): void;
  };

/** Root directory of the faulty case. */
const FAULTY_ROOT = "/root";

/**
 * The runtime adapter and a FaultyFs, each with a fresh empty root, in that
 * order (index 0 runtime, index 1 faulty). Call `cleanup()` on every case
 * returned, used or not: the runtime case's temp directory exists already.
 *
 * @param options.prefix name prefix of the temp directory; options.seed the FaultyFs seed (default 1).
 */
export function adapterCases(options: { prefix?: string; seed?: number } = {}): AdapterCase[] {
  const dir = tempDir(options.prefix ?? "segstore-adapter-");
  const faulty = new FaultyFs({ seed: options.seed ?? 1 });
  faulty.mkdirp(FAULTY_ROOT);
  return [
    { name: runtimeFs.name as "node" | "deno", fs: runtimeFs, root: dir.path, cleanup: dir.cleanup },
    { name: "faulty", fs: faulty, root: FAULTY_ROOT, cleanup() {} },
  ];
}
