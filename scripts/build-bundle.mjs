#!/usr/bin/env node
// Bundles the compiled JavaScript in dist/ into dist/pkg/, what Node users
// import (package.json "exports") and what `npx segstore` runs.
//
// Why: Node loads an ES module graph file by file. The engine is some
// thirty modules and @msgpack/msgpack another twenty; loading them took
// 40 ms of a 200 ms process start on a slow machine (W5, open to first
// get), and every CLI command pays it. One bundle per entry point, with
// shared code in common chunks (so `segstore` and `segstore/adapters/faulty`
// share one FsError class, and instanceof works across them) and the
// modules loaded on first use (check, the server and client) in
// chunks of their own, loads in about half the time.
//
// tsc's output stays in dist/ for the .d.ts types and the tests; the
// bundle is built from it, so both are the same code.
import { build } from "esbuild";
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");
const DIST = join(ROOT, "dist");
const OUT = join(DIST, "pkg");

rmSync(OUT, { recursive: true, force: true });
const result = await build({
  entryPoints: ["mod.js", "adapters/node.js", "adapters/faulty.js", "src/cli.js"].map((p) => join(DIST, p)),
  outbase: DIST,
  outdir: OUT,
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  // Packages' ES module builds first, where a package has one (a UMD "main" has exports esbuild cannot name).
  mainFields: ["module", "main"],
  // A native addon: loaded at run time with require, from node_modules.
  external: ["fs-ext"],
  chunkNames: "chunks/[name]-[hash]",
  metafile: true,
  logLevel: "warning",
});
let bytes = 0;
for (const out of Object.values(result.metafile.outputs)) bytes += out.bytes;
console.log(`build-bundle: ${Object.keys(result.metafile.outputs).length} files, ${(bytes / 1024).toFixed(0)} KiB in dist/pkg`);
