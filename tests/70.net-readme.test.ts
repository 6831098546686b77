/**
 * The README's "Server and clients" example runs and prints what its
 * comments say (as msgpack-js keeps its README true): the example is taken
 * from README.md, pointed at this checkout instead of the "segstore"
 * package, and run in a child process in an empty directory.
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { ROOT, RUNTIME } from "./_support/net-harness.ts";
import { tempDir } from "./_support/tempdir.ts";

/** The first ```ts block after the heading `## Server and clients`. */
function readmeExample(): string {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const at = readme.indexOf("\n## Server and clients\n");
  assert.ok(at >= 0, "README has a Server and clients section");
  const m = /```ts\n([\s\S]*?)```/.exec(readme.slice(at));
  assert.ok(m !== null, "the section has a ts example");
  return m![1]!;
}

test("README: the Server and clients example runs and prints what it says", () => {
  const dir = tempDir("segstore-readme-net-");
  try {
    const mod = RUNTIME === "node" ? pathToFileURL(join(ROOT, "dist", "mod.js")).href : pathToFileURL(join(ROOT, "mod.ts")).href;
    const code = readmeExample().replace(`from "segstore"`, `from ${JSON.stringify(mod)}`);
    assert.ok(code.includes(mod), "the import was pointed at this checkout");
    const file = join(dir.path, RUNTIME === "node" ? "example.mjs" : "example.ts");
    writeFileSync(file, code);
    const [cmd, args] = RUNTIME === "node"
      ? [process.execPath, [file]]
      : [join(ROOT, "node_modules", ".bin", "deno"), ["run", "-A", "--quiet", "--config", join(ROOT, "deno.json"), file]];
    const r = spawnSync(cmd, args, { cwd: dir.path, encoding: "utf8", timeout: 60_000, env: { ...process.env, NO_COLOR: "1" } });
    assert.is(r.status, 0, `the example exits 0; stderr: ${r.stderr}`);
    // Deno colours console.log numbers when FORCE_COLOR is set in the environment (the test runner sets it to 0).
    const lines = r.stdout.replace(/\x1b\[[0-9;]*m/g, "").trim().split("\n");
    // Printed in this order by the main flow; bob's invalidation lines interleave as pushes arrive.
    const main = lines.filter((l) => !l.startsWith("bob:"));
    assert.equal(main, ["v1", "ConflictError", "5000000"]);
    const heard = lines.filter((l) => l.startsWith("bob:"));
    assert.ok(heard.length >= 1, `bob heard of alice's commits: ${JSON.stringify(lines)}`);
    assert.match(heard[0]!, /^bob: 1 id\(s\) changed in transaction \d+$/);
  } finally {
    dir.cleanup();
  }
});

test.run();
