#!/usr/bin/env node
// The `segstore` command under Node (package.json "bin"): runs the compiled
// command line in dist/ (built by `npm install`, which runs `npm run build`).
// Deno runs src/cli.ts directly: `deno task segstore ...`.
import { runProcess } from "../dist/src/cli.js";

await runProcess();
