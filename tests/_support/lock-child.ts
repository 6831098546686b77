/**
 * A child process for tests/21.lock.test.ts: takes an flock through the
 * runtime's adapter and reports on stdout, so the test can pit processes
 * (and Node against Deno) against each other.
 *
 *   node dist/tests/_support/lock-child.js PATH exclusive|shared wait|nowait
 *   deno run -A tests/_support/lock-child.ts PATH exclusive|shared wait|nowait
 *
 * Prints "ready <runtime>" once the file is open, then "locked" or "busy"
 * (nowait, held elsewhere). A child that got the lock holds it until its
 * stdin ends, then unlocks, prints "released" and exits 0; a busy child
 * exits 0 at once. A waiting child prints "locked" only when it gets it.
 */
import process from "node:process";
import { runtimeFs } from "../../adapters/runtime.ts";

const [path, mode, wait] = process.argv.slice(2);
if (!path || (mode !== "exclusive" && mode !== "shared") || (wait !== "wait" && wait !== "nowait")) {
  process.stderr.write("usage: lock-child PATH exclusive|shared wait|nowait\n");
  process.exit(2);
}

const file = runtimeFs.open(path, "r");
process.stdout.write(`ready ${runtimeFs.name}\n`);
if (!file.lock(mode, wait === "wait")) {
  process.stdout.write("busy\n");
  file.close();
  process.exit(0);
}
process.stdout.write("locked\n");
process.stdin.resume();
process.stdin.on("end", () => {
  file.unlock();
  file.close();
  process.stdout.write("released\n");
  process.exit(0);
});
