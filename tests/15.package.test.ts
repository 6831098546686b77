// runtimes: node
/**
 * The package as a Node user imports it: `segstore` and its subpaths
 * resolve through package.json "exports" to the bundle in dist/pkg
 * (scripts/build-bundle.mjs), not to the per-file dist/ the other tests
 * use. Checks the bundle exports what mod.ts does, that the entry points
 * share one copy of each class (an FsError thrown by the faulty adapter is
 * the FsError the engine checks for), and that the modules loaded on first
 * use (check) load from it.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import * as source from "../mod.ts";

/** Variables, so tsc does not resolve the package while building it. */
const ENTRY = "segstore";
const FAULTY = "segstore/adapters/faulty";
const NODE_ADAPTER = "segstore/adapters/node";

test("the package entry is the bundle and exports what mod.ts exports", async () => {
  const resolved = import.meta.resolve(ENTRY);
  assert.match(resolved, /\/dist\/pkg\/mod\.js$/);
  const pkg = await import(ENTRY);
  assert.equal(Object.keys(pkg).sort(), Object.keys(source).sort());
});

test("a store on the package's faulty adapter: open, put, commit, a full disk refused with the engine's error class", async () => {
  const pkg = await import(ENTRY);
  const { FaultyFs } = await import(FAULTY);
  const fs = new FaultyFs({ seed: 7 });
  fs.mkdirp("/p");
  const store = pkg.open("/p/store", { create: true, fs });
  const id = await pkg.contentId(new TextEncoder().encode("hello"));
  store.put(id, new TextEncoder().encode("hello"));
  store.commit();
  fs.addFault({ action: "ENOSPC", ops: ["write"], nth: 1 });
  store.put(id, new Uint8Array(100));
  // The adapter's FsError must be recognised by the bundled engine: a StorageError, not an internal error.
  assert.throws(() => store.commit(), (e: unknown) => e instanceof pkg.StorageError && /ENOSPC/.test((e as Error).message));
  fs.removeFault();
  assert.equal(store.get(id), new TextEncoder().encode("hello"), "the committed value survives the full disk");
  store.close();
  const report = await pkg.checkPath("/p/store", { fs });
  assert.ok(report.ok, JSON.stringify(report.problems));
});

test("the node adapter subpath loads", async () => {
  const { nodeFs } = await import(NODE_ADAPTER);
  assert.is(nodeFs.name, "node");
});

test.run();
