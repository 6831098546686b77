/**
 * Test helper: a fresh, empty directory under the OS temp directory, and a
 * way to remove it. Uses node:fs directly (tests may; the engine may not),
 * which works under Node and Deno alike.
 *
 * @example
 * import { tempDir } from "./_support/tempdir.ts";
 * const dir = tempDir("segstore-put-");
 * try { open(dir.path + "/store", { create: true }); } finally { dir.cleanup(); }
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A temporary directory; `cleanup()` removes it and everything in it, and may be called twice. */
export interface TempDir {
  /** Absolute path of the directory, which exists and is empty when returned. */
  readonly path: string;
  cleanup(): void;
}

/** Creates `os.tmpdir()/<prefix><random>`. */
export function tempDir(prefix = "segstore-test-"): TempDir {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return {
    path,
    cleanup() {
      rmSync(path, { recursive: true, force: true });
    },
  };
}
