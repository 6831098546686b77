#!/usr/bin/env node
// The `segstore` command under Node (package.json "bin"): runs the compiled
// command line bundled in dist/pkg (built by `npm install`, which runs
// `npm run build`; scripts/build-bundle.mjs says why a bundle).
// Deno runs src/cli.ts directly: `deno task segstore ...`.
import { runProcess } from "../dist/pkg/src/cli.js";

await runProcess();
